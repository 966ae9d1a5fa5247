"""The dataset lock: a second holder waits, told whom for; a killed holder frees it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO
from transforms.dataset_lock import dataset_lock
from transforms.errors import ConsentgateError
from transforms.lake import Lake

TAKE_AND_REPORT = textwrap.dedent(
    """
    import sys
    from transforms.dataset_lock import dataset_lock
    from transforms.lake import Lake
    said = lambda holder: print("waiting for", holder, flush=True)
    with dataset_lock(Lake.at(sys.argv[1]), "orders", "run-b enforce", on_wait=said):
        print("holding", flush=True)
        sys.stdin.readline()  # until told to let go
    """
)


def _start(lake_root: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", TAKE_AND_REPORT, lake_root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_a_second_process_waits_for_the_holder_and_is_told_who_holds_it(tmp_path):
    lake = Lake.at(str(tmp_path))
    with dataset_lock(lake, "orders", "run-a publish"):
        other = _start(lake.root)
        assert other.stdout.readline() == "waiting for run-a publish\n"
        # And it keeps waiting: a second's silence, and the lock file still names run-a.
        assert select.select([other.stdout], [], [], 1.0)[0] == []
        assert (tmp_path / "locks" / "orders.lock").read_text() == "run-a publish"
        other_dataset = []
        with dataset_lock(lake, "customers", "run-c enforce", on_wait=other_dataset.append):
            assert other_dataset == []  # datasets do not wait for each other
    assert other.stdout.readline() == "holding\n"  # only once run-a let go
    waits = []
    other.stdin.write("\n")
    other.stdin.flush()
    assert other.wait(timeout=60) == 0
    with dataset_lock(lake, "orders", "run-d enforce", on_wait=waits.append):
        assert (tmp_path / "locks" / "orders.lock").read_text() == "run-d enforce"
    assert waits == [] and (tmp_path / "locks" / "orders.lock").read_text() == ""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    lake = Lake.at(str(tmp_path))
    holder = _start(lake.root)
    assert holder.stdout.readline() == "holding\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    waits = []
    with dataset_lock(lake, "orders", "run-e enforce", on_wait=waits.append):
        pass
    assert waits == []


def test_the_same_thread_may_lock_a_run_and_then_each_of_its_steps(tmp_path):
    lake = Lake.at(str(tmp_path))
    waits = []
    with dataset_lock(lake, "orders", "run-f run"):
        with dataset_lock(lake, "orders", "run-f enforce", on_wait=waits.append):
            assert (tmp_path / "locks" / "orders.lock").read_text() == "run-f run"
    assert waits == []


def test_a_remote_lake_is_not_locked_here(monkeypatch):
    def no_flock(*_):
        raise AssertionError("flock on a remote lake")

    monkeypatch.setattr("transforms.dataset_lock.fcntl.flock", no_flock)
    entered = []
    with dataset_lock(Lake.at("s3a://bucket/lake"), "orders", "run-g enforce", on_wait=entered.append):
        entered.append("inside")
    assert entered == ["inside"]


@pytest.mark.parametrize("name", ["", "a/b", "../orders", ".hidden"])
def test_a_name_that_is_not_a_dataset_takes_no_lock(tmp_path, name):
    with pytest.raises(ConsentgateError, match="not a dataset name"):
        with dataset_lock(Lake.at(str(tmp_path)), name, "rollback rollback"):
            pass
    assert not (tmp_path / "locks").exists()
