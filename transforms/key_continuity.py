"""Keys never mix silently in one published table.

Every staged and published folder records the version and fingerprint of its keys
(``_keys.json``). A run compares its keys with those of the current version of
``clean.<dataset>``:

- the same version label with another fingerprint is a misconfiguration (a key was
  replaced without saying so): the run stops with exit 2;
- a new version label is a rotation: the run recomputes the whole table under the new
  key, the report says so, and once the re-keyed version is published the retained
  versions written under other keys are removed (a rollback to one of them would mix
  keys, and erasure could not reach them without the retired key). The retired HMAC key
  must be in ``CONSENTGATE_HMAC_PREVIOUS_KEYS`` for the rotation run, so that the
  current version can still be purged and old erasure tombstones still match.
"""

from __future__ import annotations

import json

from pyspark.sql import SparkSession

from transforms.errors import MissingKeyError
from transforms.fs import list_dirs
from transforms.keys import PREVIOUS_KEYS_ENV, RunKeys
from transforms.lake import Lake, keys_marker
from transforms.storage import read_text, write_text


def write_keys_marker(output_folder: str, keys: RunKeys) -> None:
    write_text(keys_marker(output_folder), json.dumps(keys.describe(), sort_keys=True) + "\n")


def read_keys_marker(output_folder: str) -> dict | None:
    text = read_text(keys_marker(output_folder))
    return json.loads(text) if text else None


def _fingerprint(marker: dict | None, kind: str) -> str | None:
    described = (marker or {}).get(kind)
    return described["fingerprint"] if described else None


def check_key_continuity(lake: Lake, dataset: str, current_version: str | None, keys: RunKeys) -> dict:
    """``{kind: {"from": ..., "to": ...}}`` for each rotated key; raises on a silent change."""
    if current_version is None:
        return {}
    folder = lake.clean_version(dataset, current_version)
    published = read_keys_marker(folder)
    if published is None:
        return {}
    rotations = {}
    for kind, described in keys.describe().items():
        before = published.get(kind)
        if before is None or described is None or before["fingerprint"] == described["fingerprint"]:
            continue
        if before["version"] == described["version"]:
            raise MissingKeyError(
                f"{folder}: published with {kind} key version {before['version']} (fingerprint "
                f"{before['fingerprint']}); this run's key has the same version and fingerprint "
                f"{described['fingerprint']}: give a new key a new version to rotate it"
            )
        if kind == "hmac" and before["fingerprint"] not in keys.hmac_ring():
            raise MissingKeyError(
                f"{folder}: rotating the hmac key from version {before['version']} (fingerprint "
                f"{before['fingerprint']}) needs that key in {PREVIOUS_KEYS_ENV}"
            )
        rotations[kind] = {"from": before, "to": described}
    return rotations


def versions_keyed_otherwise(spark: SparkSession, lake: Lake, dataset: str, described: dict) -> list[str]:
    """Retained versions whose pseudonyms or ciphertexts were made with other keys than
    ``described`` (a ``_keys.json`` marker)."""
    stale = []
    for version in list_dirs(spark, lake.clean(dataset)):
        marker = read_keys_marker(lake.clean_version(dataset, version))
        if marker is None:
            continue
        for kind in ("hmac", "encryption"):
            mine, theirs = _fingerprint(described, kind), _fingerprint(marker, kind)
            if mine and theirs and mine != theirs:
                stale.append(version)
                break
    return stale
