"""One step of a dataset at a time, whoever starts it.

The DAG's ``max_active_runs=1`` holds for its scheduled and manual runs only: an Airflow
3 backfill counts its runs against its own limit (10 by default), and ``consentgate
run`` from a shell knows nothing of Airflow. Unlocked, two runs' steps could overlap: an
older judgement could pass publish's check of the current version just before a newer
run publishes, then point the table back at itself; one run's erasure purge could
rewrite a staged output while another validates it. Every step that writes under a
dataset holds its lock from start to end, and a step that finds it taken waits.

On a local lake the lock is ``flock`` on ``locks/<dataset>.lock``: the kernel releases it
when the holding process ends, however it ends, so a killed job leaves no stale lock.
An object store has no such primitive: on a remote lake nothing is locked here, and the
DAG's Spark tasks take the Airflow pool named by ``CONSENTGATE_POOL`` instead (give it
one slot).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from transforms.errors import ConsentgateError
from transforms.lake import Lake, local_path

# This thread's locks: `consentgate run` locks the whole run, then each of its steps.
_this_thread = threading.local()


@contextmanager
def dataset_lock(lake: Lake, dataset: str, holder: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Holds ``dataset``'s lock; ``holder`` (a run id and step, never data) is written in
    the lock file for whoever waits, and ``on_wait`` is told the holder before waiting."""
    if not dataset or "/" in dataset or dataset.startswith("."):
        raise ConsentgateError(f"{dataset!r}: not a dataset name")
    if not lake.is_local:
        yield
        return
    path = local_path(lake.lock(dataset))
    held = _this_thread.__dict__.setdefault("held", set())
    if path in held:
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode("utf-8"), 0)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
