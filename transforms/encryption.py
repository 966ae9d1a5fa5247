"""The ``encrypt`` rule: reversible AES-256-GCM from Spark's built-in ``aes_encrypt``.

The key rides in a broadcast one-row DataFrame, like the HMAC pads, never as a literal.
The 12-byte nonce is the HMAC of the column name and the value under a key derived from
the encryption key (a synthetic IV): the same value in the same column encrypts to the
same text, so reruns publish identical bytes and equal values stay joinable, as they
are with pseudonyms; two different values, or one value in two columns, never share a
nonce. The column's name is the GCM additional data, so a ciphertext
moved to another column does not decrypt. A cell holds base64(nonce || ciphertext || tag).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.keys import SecretKey
from transforms.pseudonym import Pseudonymizer, attach_secret_columns

GCM_NONCE_BYTES = 12
_AES_KEY = "_cg_aes_key"


@dataclass(frozen=True)
class Encryptor:
    spark: SparkSession
    key: SecretKey

    @property
    def _nonces(self) -> Pseudonymizer:
        return Pseudonymizer(self.spark, self.key.derive("aes-gcm nonce"), tag="aes_nonce")

    def attach(self, df: DataFrame) -> DataFrame:
        return self._nonces.attach(attach_secret_columns(self.spark, df, {_AES_KEY: self.key.material}))

    def detach(self, df: DataFrame) -> DataFrame:
        return self._nonces.detach(df.drop(_AES_KEY))

    def encrypt(self, value: Column, column_name: str) -> Column:
        text = value.cast("string")
        # The column's name is in the nonce's input too: one value in two columns must
        # not give two messages under one key and nonce.
        nonce_input = F.concat(F.lit(column_name + "\u0000"), text)
        nonce = F.substring(self._nonces.hmac_binary(nonce_input), 1, GCM_NONCE_BYTES)
        sealed = F.aes_encrypt(text, F.col(_AES_KEY), F.lit("GCM"), F.lit("DEFAULT"), nonce, F.lit(column_name))
        # Spark's base64 may break lines every 76 characters (spark.sql.chunkBase64String.enabled).
        return F.regexp_replace(F.base64(sealed), r"[\r\n]", "")

    @staticmethod
    def decrypt(cell: Column, column_name: str) -> Column:
        """The plain text, or null when the cell does not decrypt under this key and column."""
        mode, padding = F.lit("GCM"), F.lit("DEFAULT")
        return F.try_aes_decrypt(F.unbase64(cell), F.col(_AES_KEY), mode, padding, F.lit(column_name)).cast("string")
