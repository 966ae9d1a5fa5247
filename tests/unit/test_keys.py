from __future__ import annotations

import hashlib
import hmac

import pytest

from transforms.errors import MissingKeyError
from transforms.keys import load_hmac_key
from transforms.pseudonym import hmac_pads


def test_no_key_is_an_error_naming_the_variable():
    with pytest.raises(MissingKeyError, match="CONSENTGATE_HMAC_KEY"):
        load_hmac_key({})


def test_short_key_is_refused():
    with pytest.raises(MissingKeyError, match="at least 16 bytes"):
        load_hmac_key({"CONSENTGATE_HMAC_KEY": "short"})


def test_key_never_shows_in_its_description():
    key = load_hmac_key({"CONSENTGATE_HMAC_KEY": "a-secret-value-of-some-length", "CONSENTGATE_HMAC_KEY_VERSION": "7"})
    assert "a-secret-value" not in repr(key)
    assert key.version == "7"
    assert len(key.fingerprint) == 16
    assert key.fingerprint == load_hmac_key({"CONSENTGATE_HMAC_KEY": "a-secret-value-of-some-length"}).fingerprint
    assert key.fingerprint != load_hmac_key({"CONSENTGATE_HMAC_KEY": "another-secret-of-some-length"}).fingerprint


@pytest.mark.parametrize("key", [b"k" * 16, b"k" * 64, b"k" * 65, bytes(range(200))])
def test_pads_reproduce_rfc2104_for_short_and_long_keys(key):
    inner, outer = hmac_pads(key)
    for message in (b"", b"C0000001", "Zoë".encode()):
        composed = hashlib.sha256(outer + hashlib.sha256(inner + message).digest()).hexdigest()
        assert composed == hmac.new(key, message, hashlib.sha256).hexdigest()
