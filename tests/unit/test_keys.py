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


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abababababababababab", "repeated pattern"),
        ("x" * 40, "repeated pattern"),
        ("ababababababababa", "repeated pattern"),  # the pattern cut off at the end
        ("abcdabcdabcdabcdabc", "repeated pattern"),
        ("changeme-changeme-1", "placeholder"),
    ],
)
def test_weak_keys_are_refused(value, message):
    with pytest.raises(MissingKeyError, match=message):
        load_hmac_key({"CONSENTGATE_HMAC_KEY": value})


def test_encryption_key_is_32_bytes_as_hex_or_base64():
    import base64

    from transforms.keys import load_encryption_key

    material = bytes(range(100, 132))
    as_hex = load_encryption_key(
        {"CONSENTGATE_ENCRYPTION_KEY": material.hex(), "CONSENTGATE_ENCRYPTION_KEY_VERSION": "3"}
    )
    as_base64 = load_encryption_key({"CONSENTGATE_ENCRYPTION_KEY": base64.b64encode(material).decode()})
    assert as_hex.material == as_base64.material == material
    assert (as_hex.version, as_base64.version) == ("3", "1")
    for bad in ("", material[:16].hex(), "not a key at all", base64.b64encode(material[:24]).decode()):
        with pytest.raises(MissingKeyError, match="CONSENTGATE_ENCRYPTION_KEY"):
            load_encryption_key({"CONSENTGATE_ENCRYPTION_KEY": bad})


def test_previous_keys_are_a_json_list_and_each_is_checked():
    from transforms.keys import load_previous_hmac_keys, load_run_keys

    env = {
        "CONSENTGATE_HMAC_KEY": "current-key-material-42",
        "CONSENTGATE_HMAC_PREVIOUS_KEYS": '["retired-key-material-41"]',
    }
    keys = load_run_keys(needs_encryption=False, environ=env)
    assert [k.fingerprint for k in keys.hmac_ring().values()] == [
        keys.hmac.fingerprint,
        load_hmac_key({"CONSENTGATE_HMAC_KEY": "retired-key-material-41"}).fingerprint,
    ]
    assert keys.encryption is None and keys.describe()["encryption"] is None
    for bad in ("retired-key", '["short"]', '{"a": "retired-key-material-41"}'):
        with pytest.raises(MissingKeyError, match="CONSENTGATE_HMAC_PREVIOUS_KEYS"):
            load_previous_hmac_keys({"CONSENTGATE_HMAC_PREVIOUS_KEYS": bad})


def test_derived_keys_are_independent_of_the_key_and_of_each_other():
    key = load_hmac_key({"CONSENTGATE_HMAC_KEY": "a-secret-value-of-some-length"})
    shift, nonce = key.derive("date shift"), key.derive("aes-gcm nonce")
    assert len({key.material, shift.material, nonce.material}) == 3
    assert shift.material == key.derive("date shift").material
    assert "a-secret" not in repr(shift)


def test_no_value_pseudonymised_with_the_key_gives_a_derived_key():
    """A pseudonym is HMAC(key, value); a value spelling a derivation's label out must not
    publish that derived key (the recipient's, the date shifts')."""
    key = load_hmac_key({"CONSENTGATE_HMAC_KEY": "a-secret-value-of-some-length"})
    for label in ("date shift", "recipient acme_ads", "incremental ledger"):
        crafted = f"consentgate derived key: {label}".encode()
        assert hmac.new(key.material, crafted, hashlib.sha256).digest() != key.derive(label).material
