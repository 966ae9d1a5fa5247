"""IAB TCF v2 consent strings, decoded with Spark built-in functions.

A TC string's core segment (before the first ``.``) is base64url without padding; its
bits are big-endian fields: Version (6), Created (36), LastUpdated (36), CmpId (12),
CmpVersion (12), ConsentScreen (6), ConsentLanguage (12), VendorListVersion (12),
TcfPolicyVersion (6), IsServiceSpecific (1), UseNonStandardTexts (1),
SpecialFeatureOptIns (12), then PurposesConsent (24 bits, purpose 1 first): purpose
``p`` is bit ``152 + p - 1``. Only the version and the purpose consents are read.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import Column
from pyspark.sql import functions as F

PURPOSES_CONSENT_OFFSET = 152
PURPOSE_COUNT = 24


def core_bytes(tc_string: Column) -> Column:
    """The core segment as binary; null when the string is null or not base64url."""
    core = F.split(tc_string, r"\.").getItem(0)
    standard = F.translate(core, "-_", "+/")
    padded = F.rpad(standard, (F.ceil(F.length(standard) / 4) * 4).cast("int"), "=")
    valid = core.rlike(r"^[A-Za-z0-9_-]+$")
    return F.when(valid, F.try_to_binary(padded, F.lit("base64")))


def bit(data: Column, index: int) -> Column:
    """Bit ``index`` (0 = the most significant bit of the first byte), or null past the end."""
    byte = F.conv(F.hex(F.substring(data, index // 8 + 1, 1)), 16, 10).cast("int")
    value = F.shiftright(byte, 7 - index % 8).bitwiseAND(F.lit(1))
    return F.when(F.length(data) > index // 8, value)


def version(data: Column) -> Column:
    first = F.conv(F.hex(F.substring(data, 1, 1)), 16, 10).cast("int")
    return F.shiftright(first, 2)


def has_purposes(tc_string: Column, purposes: Iterable[int]) -> Column:
    """True when a valid v2 TC string consents to every purpose listed; false otherwise (fail closed)."""
    data = core_bytes(tc_string)
    granted = version(data) == 2
    for purpose in purposes:
        granted = granted & (bit(data, PURPOSES_CONSENT_OFFSET + purpose - 1) == 1)
    return F.coalesce(granted, F.lit(False))
