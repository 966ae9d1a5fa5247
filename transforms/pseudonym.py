"""Keyed pseudonyms: HMAC-SHA256 (RFC 2104) from Spark's built-in sha2, concat and unhex.

The key never appears in a query plan as a literal (plans are printed in errors and
in the Spark UI): its two derived pads ride in a one-row DataFrame that is broadcast
and joined to the data, and are removed again before anything is written. Several
keys (the pseudonym key, a derived date-shift key, a retired key) can ride side by
side: each ``Pseudonymizer`` names its pad columns after its ``tag``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StructField, StructType

from transforms.keys import SecretKey

SHA256_BLOCK_BYTES = 64


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """RFC 2104 inner and outer pads: keys longer than a block are hashed first."""
    if len(key) > SHA256_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    key = key.ljust(SHA256_BLOCK_BYTES, b"\x00")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def attach_secret_columns(spark: SparkSession, df: DataFrame, columns: dict[str, bytes]) -> DataFrame:
    """Joins one broadcast row of binary columns (key material) to every row of ``df``."""
    schema = StructType([StructField(name, BinaryType()) for name in columns])
    row = spark.createDataFrame([tuple(bytearray(value) for value in columns.values())], schema)
    return df.crossJoin(F.broadcast(row))


@dataclass(frozen=True)
class Pseudonymizer:
    spark: SparkSession
    key: SecretKey
    tag: str = "hmac"

    @property
    def _inner_pad(self) -> str:
        return f"_cg_{self.tag}_ipad"

    @property
    def _outer_pad(self) -> str:
        return f"_cg_{self.tag}_opad"

    def attach(self, df: DataFrame) -> DataFrame:
        """Adds the pad columns that ``hmac_hex`` reads; call ``detach`` before writing."""
        inner, outer = hmac_pads(self.key.material)
        return attach_secret_columns(self.spark, df, {self._inner_pad: inner, self._outer_pad: outer})

    def detach(self, df: DataFrame) -> DataFrame:
        return df.drop(self._inner_pad, self._outer_pad)

    def hmac_hex(self, value: Column) -> Column:
        """Lower-case hex HMAC-SHA256 of the UTF-8 bytes of ``value``; null stays null."""
        message = F.encode(value, "UTF-8")
        inner = F.unhex(F.sha2(F.concat(F.col(self._inner_pad), message), 256))
        return F.sha2(F.concat(F.col(self._outer_pad), inner), 256)

    def hmac_binary(self, value: Column) -> Column:
        """The same HMAC as 32 raw bytes."""
        return F.unhex(self.hmac_hex(value))
