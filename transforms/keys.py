"""Where the pseudonymisation key comes from, and how it is described without being shown.

The jobs read the key from ``CONSENTGATE_HMAC_KEY``; inside Airflow, when that is unset,
the enforce task takes it from the password of the connection ``consentgate_hmac`` and
hands it to spark-submit in that same variable. It is never taken from code or from a
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


def load_hmac_key(environ: dict[str, str] | None = None) -> SecretKey:
    """The pseudonymisation key, or MissingKeyError (exit 2) when none or a weak one is set."""
    environ = os.environ if environ is None else environ
    value = environ.get(KEY_ENV)
    source = f"${KEY_ENV}"
    if not value:
        raise MissingKeyError(f"no pseudonymisation key: set {KEY_ENV} (or the Airflow connection {KEY_CONNECTION_ID})")
    material = value.encode("utf-8")
    if len(material) < MIN_KEY_BYTES:
        raise MissingKeyError(f"{source} is too short: at least {MIN_KEY_BYTES} bytes are required")
    return SecretKey(material=material, version=environ.get(KEY_VERSION_ENV, "1"), source=source)
