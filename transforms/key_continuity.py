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
from transforms.storage import read_json, read_text, write_text


def write_keys_marker(output_folder: str, keys: RunKeys) -> None:
    write_text(keys_marker(output_folder), json.dumps(keys.describe(), sort_keys=True) + "\n")


def read_keys_marker(output_folder: str) -> dict | None:
    text = read_text(keys_marker(output_folder))
    return json.loads(text) if text else None


def recorded_keys(lake: Lake, dataset: str, folder: str, version: str) -> dict | None:
    """The keys a staged or published folder was made with: its ``_keys.json``, or, for a
    folder written before those markers, the key its run's enforce step recorded."""
    marker = read_keys_marker(folder)
    if marker is not None:
        return marker
    run_id = version  # a version is its run id, maybe with ".2" or ".erased" appended
    while True:
        state = read_json(lake.step_state(dataset, run_id, "enforce"))
        if state and state.get("key_fingerprint"):
            return {"hmac": {"version": state.get("key_version"), "fingerprint": state["key_fingerprint"]}}
        if "." not in run_id:
            return None
        run_id = run_id.rsplit(".", 1)[0]


def fingerprint_of(marker: dict | None, kind: str) -> str | None:
    described = (marker or {}).get(kind)
    return described["fingerprint"] if described else None


def check_key_continuity(lake: Lake, dataset: str, current_version: str | None, keys: RunKeys) -> dict:
    """``{kind: {"from": ..., "to": ...}}`` for each rotated key; raises on a silent change,
    and when the current version has no record of its keys (nothing could tell)."""
    if current_version is None:
        return {}
    folder = lake.clean_version(dataset, current_version)
    published = recorded_keys(lake, dataset, folder, current_version)
    if published is None:
        raise MissingKeyError(f"{folder}: no record of the keys it was made with; remove or republish it")
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
    ``described`` (a ``_keys.json`` marker), or with keys nobody recorded."""
    stale = []
    for version in list_dirs(spark, lake.clean(dataset)):
        marker = recorded_keys(lake, dataset, lake.clean_version(dataset, version), version)
        if marker is None:
            stale.append(version)
            continue
        for kind in ("hmac", "encryption"):
            mine, theirs = fingerprint_of(described, kind), fingerprint_of(marker, kind)
            if mine and theirs and mine != theirs:
                stale.append(version)
                break
    return stale


def check_publishable_keys(staged: dict | None, current: dict | None, rotations: dict, where: str) -> None:
    """A staged output may replace the current version only with the same keys, or with
    the keys its own run rotated to from exactly the current version's."""
    if current is None:
        return
    if staged is None:
        raise MissingKeyError(f"{where}: no record of the keys it was made with; run the enforce step again")
    for kind in ("hmac", "encryption"):
        mine, theirs = fingerprint_of(staged, kind), fingerprint_of(current, kind)
        if mine is None or theirs is None or mine == theirs:
            continue
        rotated_from = ((rotations or {}).get(kind) or {}).get("from", {}).get("fingerprint")
        if rotated_from != theirs:
            raise MissingKeyError(
                f"{where}: made with {kind} key fingerprint {mine}, the current version with {theirs}, "
                "and its run did not rotate from that key; run the enforce step again"
            )
