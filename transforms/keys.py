"""Where the pseudonymisation key comes from, and how it is described without being shown.

The key is read from ``CONSENTGATE_HMAC_KEY`` or, when that is unset, from the password
of the Airflow connection ``consentgate_hmac``. It is never taken from code or from a
command-line argument (those show up in process listings), never logged and never
written to a report: reports carry a fingerprint and the key version instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from transforms.errors import MissingKeyError

KEY_ENV = "CONSENTGATE_HMAC_KEY"
KEY_VERSION_ENV = "CONSENTGATE_HMAC_KEY_VERSION"
KEY_CONNECTION_ID = "consentgate_hmac"
MIN_KEY_BYTES = 16


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


def _from_airflow_connection() -> str | None:
    try:
        from airflow.sdk import BaseHook  # only inside an Airflow task
    except ImportError:
        return None
    try:
        return BaseHook.get_connection(KEY_CONNECTION_ID).password or None
    except Exception:  # no such connection, or not inside Airflow: treated as no key
        return None


def load_hmac_key(environ: dict[str, str] | None = None, use_airflow: bool = False) -> SecretKey:
    """The pseudonymisation key, or MissingKeyError (exit 2) when none or a weak one is set."""
    environ = os.environ if environ is None else environ
    value = environ.get(KEY_ENV)
    source = f"${KEY_ENV}"
    if not value and use_airflow:
        value = _from_airflow_connection()
        source = f"Airflow connection {KEY_CONNECTION_ID}"
    if not value:
        raise MissingKeyError(f"no pseudonymisation key: set {KEY_ENV} (or the Airflow connection {KEY_CONNECTION_ID})")
    material = value.encode("utf-8")
    if len(material) < MIN_KEY_BYTES:
        raise MissingKeyError(f"{source} is too short: at least {MIN_KEY_BYTES} bytes are required")
    return SecretKey(material=material, version=environ.get(KEY_VERSION_ENV, "1"), source=source)
