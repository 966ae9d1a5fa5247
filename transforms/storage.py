"""Small text files (step state, reports, the CURRENT pointer) on a local or remote lake.

Local paths use the file system directly, with write-then-rename so a reader never
sees half a file; other URIs go through fsspec (install the matching filesystem,
e.g. s3fs, on a cluster).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime

from transforms.lake import is_local, local_path


def write_text(path: str, text: str, private: bool = False) -> None:
    if is_local(path):
        target = local_path(path)
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600 if private else 0o644)
        os.replace(tmp, target)
        return
    import fsspec

    with fsspec.open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    if is_local(path):
        try:
            with open(local_path(path), encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
    import fsspec

    fs, _, (target,) = fsspec.get_fs_token_paths(path)
    if not fs.exists(target):
        return None
    with fs.open(target, "r", encoding="utf-8") as handle:
        return handle.read()


def delete(path: str) -> None:
    """Removes one small file; absent is fine."""
    if is_local(path):
        try:
            os.remove(local_path(path))
        except FileNotFoundError:
            pass
        return
    import fsspec

    fs, _, (target,) = fsspec.get_fs_token_paths(path)
    if fs.exists(target):
        fs.rm(target)


def list_names(folder: str) -> list[str]:
    """The names of the entries directly in ``folder`` (none when it does not exist)."""
    if is_local(folder):
        try:
            return sorted(os.listdir(local_path(folder)))
        except (FileNotFoundError, NotADirectoryError):
            return []
    import fsspec

    fs, _, (target,) = fsspec.get_fs_token_paths(folder)
    if not fs.isdir(target):
        return []
    return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(target, detail=False))


def write_json(path: str, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str) -> dict | None:
    text = read_text(path)
    return None if text is None else json.loads(text)


def append_audit_line(path: str, entry: dict) -> dict:
    """Appends ``entry``, stamped with the time and the operating-system user, as one
    JSON line to an audit log (decryptions, rollbacks); returns the stamped entry."""
    stamped = audit_entry(entry)
    append_stamped_line(path, stamped)
    return stamped


def audit_entry(entry: dict) -> dict:
    """``entry`` stamped with the time and the operating-system user."""
    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "user": getpass.getuser(), **entry}


def _audit_line(stamped: dict) -> str:
    return json.dumps(stamped, sort_keys=True) + "\n"


def append_stamped_line_once(path: str, stamped: dict) -> None:
    """Appends an entry made by ``audit_entry`` unless the log holds it already, whenever
    it was stamped: a retry after a crash between the append and recording it, or one
    that made the same entry again, logs no second line."""
    logged = read_text(path) or ""
    if any(unstamped(entry) == unstamped(stamped) for entry in logged_entries(logged)):
        return
    append_on_a_line_of_its_own(path, stamped, logged)


def logged_entries(logged: str) -> list[dict]:
    """An audit log's entries in order (its text, as ``read_text`` gives it); a torn line
    (a write cut short) is left out."""
    entries = []
    for line in logged.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def unstamped(entry: dict, also: tuple[str, ...] = ()) -> dict:
    """``entry`` without the stamp ``audit_entry`` gave it (and the keys ``also``)."""
    return {key: value for key, value in entry.items() if key not in ("at", "user", *also)}


def append_on_a_line_of_its_own(path: str, stamped: dict, logged: str | None = None) -> None:
    """Appends an entry made by ``audit_entry``; after a torn last line (a write cut
    short) the entry still goes on a line of its own."""
    logged = (read_text(path) or "") if logged is None else logged
    if logged and not logged.endswith("\n"):
        _append_text(path, "\n")
    append_stamped_line(path, stamped)


def append_stamped_line(path: str, stamped: dict) -> None:
    _append_text(path, _audit_line(stamped))


def _append_text(path: str, text: str) -> None:
    line = text.encode("utf-8")
    if is_local(path):
        # One write to a file opened for appending: two jobs logging at once (two shares
        # publishing) both keep their line.
        target = local_path(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return
    # Object stores cannot append: read and rewrite (one writer at a time on a remote lake).
    write_text(path, (read_text(path) or "") + line.decode("utf-8"))


def private_folder(path: str) -> None:
    """Creates ``path`` owner-only (0700) on a local lake before personal data is written
    into it, so that nothing in it is readable by others while it is written (Spark
    creates its files with the default modes; ``restrict_to_owner`` tightens them after)."""
    if not is_local(path):
        return
    folder = local_path(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)


def restrict_to_owner(path: str) -> None:
    """Quarantined data holds raw personal data: owner-only on a local lake (0700/0600);
    on a remote lake access is the store's own policy.

    A file with other hard links (a period an incremental run reused from the published
    version) shares its mode with them: it is replaced by a private copy first, so the
    published version stays readable to analysts."""
    if not is_local(path):
        return
    for folder, _, files in os.walk(local_path(path)):
        os.chmod(folder, 0o700)
        for name in files:
            file = os.path.join(folder, name)
            if os.stat(file).st_nlink > 1:
                _unlink_into_private_copy(file)
            os.chmod(file, 0o600)


def _unlink_into_private_copy(file: str) -> None:
    copy = f"{file}.private"
    if os.path.lexists(copy):
        os.unlink(copy)  # a crash's leftover (never written through: it may be a link too)
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, open(file, "rb") as source:
        shutil.copyfileobj(source, out)
    os.replace(copy, file)
