"""Keyed pseudonyms: HMAC-SHA256 (RFC 2104) from Spark's built-in sha2, concat and unhex.

The key never appears in a query plan as a literal (plans are printed in errors and
in the Spark UI): its two derived pads ride in a one-row DataFrame that is broadcast
and joined to the data, and are removed again before anything is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StructField, StructType

from transforms.keys import SecretKey

SHA256_BLOCK_BYTES = 64
_INNER_PAD = "_cg_hmac_ipad"
_OUTER_PAD = "_cg_hmac_opad"


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """RFC 2104 inner and outer pads: keys longer than a block are hashed first."""
    if len(key) > SHA256_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    key = key.ljust(SHA256_BLOCK_BYTES, b"\x00")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


@dataclass(frozen=True)
class Pseudonymizer:
    spark: SparkSession
    key: SecretKey

    def attach(self, df: DataFrame) -> DataFrame:
        """Adds the pad columns that ``hmac_hex`` reads; call ``detach`` before writing."""
        inner, outer = hmac_pads(self.key.material)
        schema = StructType([StructField(_INNER_PAD, BinaryType()), StructField(_OUTER_PAD, BinaryType())])
        pads = self.spark.createDataFrame([(bytearray(inner), bytearray(outer))], schema)
        return df.crossJoin(F.broadcast(pads))

    @staticmethod
    def detach(df: DataFrame) -> DataFrame:
        return df.drop(_INNER_PAD, _OUTER_PAD)

    @staticmethod
    def hmac_hex(value: Column) -> Column:
        """Lower-case hex HMAC-SHA256 of the UTF-8 bytes of ``value``; null stays null."""
        message = F.encode(value, "UTF-8")
        inner = F.unhex(F.sha2(F.concat(F.col(_INNER_PAD), message), 256))
        return F.sha2(F.concat(F.col(_OUTER_PAD), inner), 256)
