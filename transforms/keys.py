"""Where the keys come from, how weak ones are refused, and how keys are described
without being shown.

- ``CONSENTGATE_HMAC_KEY``: the pseudonymisation key (every run needs it: pseudonyms
  and erasure tombstones are keyed). Inside Airflow, when the variable is unset, the
  enforce task takes it from the password of the connection ``consentgate_hmac``.
- ``CONSENTGATE_HMAC_PREVIOUS_KEYS``: a JSON list of retired pseudonymisation keys, kept
  after a rotation for as long as erasure tombstones written under them exist.
- ``CONSENTGATE_ENCRYPTION_KEY``: the AES-256 key of the ``encrypt`` rule (64 hex digits
  or the base64 of 32 bytes); connection ``consentgate_encryption``.

Keys are never taken from code or a command-line argument (those show up in process
listings), never logged and never written to a report: reports carry a fingerprint and
the key's version (``..._VERSION``) instead, so a rotation is visible.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from transforms.errors import MissingKeyError

KEY_ENV = "CONSENTGATE_HMAC_KEY"
KEY_VERSION_ENV = "CONSENTGATE_HMAC_KEY_VERSION"
KEY_CONNECTION_ID = "consentgate_hmac"
PREVIOUS_KEYS_ENV = "CONSENTGATE_HMAC_PREVIOUS_KEYS"
PREVIOUS_KEYS_CONNECTION_ID = "consentgate_hmac_previous"
ENCRYPTION_KEY_ENV = "CONSENTGATE_ENCRYPTION_KEY"
ENCRYPTION_KEY_VERSION_ENV = "CONSENTGATE_ENCRYPTION_KEY_VERSION"
ENCRYPTION_KEY_CONNECTION_ID = "consentgate_encryption"
# Environment variable <- Airflow connection whose password supplies it.
KEY_CONNECTIONS = {
    KEY_ENV: KEY_CONNECTION_ID,
    PREVIOUS_KEYS_ENV: PREVIOUS_KEYS_CONNECTION_ID,
    ENCRYPTION_KEY_ENV: ENCRYPTION_KEY_CONNECTION_ID,
}
MIN_KEY_BYTES = 16
# Separates derived keys from pseudonyms (see SecretKey.derive).
DERIVATION_PREFIX = b"\xff"
ENCRYPTION_KEY_BYTES = 32
_PLACEHOLDERS = ("changeme", "password")


@dataclass(frozen=True)
class SecretKey:
    material: bytes
    version: str
    source: str

    def __repr__(self) -> str:  # keeps the material out of tracebacks and debug output
        return f"SecretKey(version={self.version!r}, source={self.source!r}, fingerprint={self.fingerprint!r})"

    @property
    def fingerprint(self) -> str:
        """A short, one-way identifier of the key: changes when the key changes, reveals nothing."""
        return hmac.new(self.material, b"consentgate key fingerprint", hashlib.sha256).hexdigest()[:16]

    def derive(self, label: str) -> SecretKey:
        """An independent key for one use (e.g. date shifting), so that one published
        value never lets anyone compute another.

        The label is prefixed with the byte 0xFF, which no UTF-8 text contains: a
        pseudonym is the HMAC of a value's UTF-8 bytes under the same key, so a value
        spelling the label out would otherwise publish the derived key as its pseudonym."""
        label_bytes = DERIVATION_PREFIX + f"consentgate derived key: {label}".encode()
        material = hmac.new(self.material, label_bytes, hashlib.sha256).digest()
        return SecretKey(material=material, version=self.version, source=f"{self.source} ({label})")

    def describe(self) -> dict[str, str]:
        return {"version": self.version, "fingerprint": self.fingerprint}


def check_strength(material: bytes, source: str, min_bytes: int = MIN_KEY_BYTES) -> None:
    """Refuses keys that are short, a repeated short pattern, or a well-known placeholder."""
    if len(material) < min_bytes:
        raise MissingKeyError(f"{source} is too short: at least {min_bytes} bytes are required")
    # A pattern cut off at the end repeats too: every byte equals the one `period` before it.
    if any(material[period:] == material[:-period] for period in range(1, 5)):
        raise MissingKeyError(f"{source} is a repeated pattern, not a secret key")
    lowered = material.lower()
    if any(placeholder.encode() in lowered for placeholder in _PLACEHOLDERS):
        raise MissingKeyError(f"{source} contains a placeholder word; generate a random key")


def load_hmac_key(environ: dict[str, str] | None = None) -> SecretKey:
    """The pseudonymisation key, or MissingKeyError (exit 2) when none or a weak one is set."""
    environ = os.environ if environ is None else environ
    value = environ.get(KEY_ENV)
    source = f"${KEY_ENV}"
    if not value:
        raise MissingKeyError(f"no pseudonymisation key: set {KEY_ENV} (or the Airflow connection {KEY_CONNECTION_ID})")
    material = value.encode("utf-8")
    check_strength(material, source)
    return SecretKey(material=material, version=environ.get(KEY_VERSION_ENV, "1"), source=source)


def load_previous_hmac_keys(environ: dict[str, str] | None = None) -> tuple[SecretKey, ...]:
    """Retired pseudonymisation keys (a JSON list of strings), for erasure tombstones only."""
    environ = os.environ if environ is None else environ
    value = environ.get(PREVIOUS_KEYS_ENV)
    source = f"${PREVIOUS_KEYS_ENV}"
    if not value:
        return ()
    try:
        keys = json.loads(value)
    except json.JSONDecodeError:
        raise MissingKeyError(f"{source} must be a JSON list of keys") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise MissingKeyError(f"{source} must be a JSON list of keys")
    previous = []
    for index, key in enumerate(keys):
        material = key.encode("utf-8")
        check_strength(material, f"{source}[{index}]")
        previous.append(SecretKey(material=material, version="previous", source=f"{source}[{index}]"))
    return tuple(previous)


def _decode_encryption_key(value: str, source: str) -> bytes:
    text = value.strip()
    try:
        is_hex = len(text) == 2 * ENCRYPTION_KEY_BYTES
        material = bytes.fromhex(text) if is_hex else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        material = b""
    if len(material) != ENCRYPTION_KEY_BYTES:
        raise MissingKeyError(
            f"{source} must be {ENCRYPTION_KEY_BYTES} random bytes (AES-256), as 64 hex digits or base64"
        )
    return material


def load_encryption_key(environ: dict[str, str] | None = None) -> SecretKey:
    """The ``encrypt`` rule's AES-256 key, or MissingKeyError (exit 2)."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENCRYPTION_KEY_ENV)
    source = f"${ENCRYPTION_KEY_ENV}"
    if not value:
        raise MissingKeyError(
            f"no encryption key: set {ENCRYPTION_KEY_ENV} (or the Airflow connection {ENCRYPTION_KEY_CONNECTION_ID})"
        )
    material = _decode_encryption_key(value, source)
    check_strength(material, source)
    return SecretKey(material=material, version=environ.get(ENCRYPTION_KEY_VERSION_ENV, "1"), source=source)


@dataclass(frozen=True)
class RunKeys:
    """Every key one run uses: reports describe them, never show them."""

    hmac: SecretKey
    previous_hmac: tuple[SecretKey, ...] = ()
    encryption: SecretKey | None = None

    def describe(self) -> dict[str, dict[str, str] | None]:
        return {
            "hmac": self.hmac.describe(),
            "encryption": self.encryption.describe() if self.encryption else None,
        }

    def hmac_ring(self) -> dict[str, SecretKey]:
        """Fingerprint -> key, current first: the keys erasure tombstones may be written under."""
        ring = {self.hmac.fingerprint: self.hmac}
        for key in self.previous_hmac:
            ring.setdefault(key.fingerprint, key)
        return ring


def load_run_keys(needs_encryption: bool, environ: dict[str, str] | None = None) -> RunKeys:
    return RunKeys(
        hmac=load_hmac_key(environ),
        previous_hmac=load_previous_hmac_keys(environ),
        encryption=load_encryption_key(environ) if needs_encryption else None,
    )


def recipient_key(key: SecretKey, recipient: str) -> SecretKey:
    """The key of one third party's pseudonyms, derived from the pseudonymisation key:
    independent for every recipient, so two recipients cannot join their copies, and
    rotated with it."""
    return key.derive(f"recipient {recipient}")
