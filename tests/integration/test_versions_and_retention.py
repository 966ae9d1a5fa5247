"""Retained versions, rollback and quarantine retention, on a small generated lake."""

from __future__ import annotations

import decimal
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ORDERS_POLICY, child_job_env
from tests.lakecheck import (
    append_raw,
    current_version_dir,
    generated_lake,
    partitioned_rows,
    pseudonym,
    read_rows,
    table_folder,
)
from transforms.cli import main
from transforms.dataset_lock import dataset_lock

pytestmark = pytest.mark.integration
RUN_DATE = date(2026, 11, 28)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    sizes = dict(customers=150, orders=1200, seed=31)
    with generated_lake(spark, tmp_path_factory, "versions_lake", RUN_DATE, **sizes) as lake:
        yield lake


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("versions_policies") / "orders.yml"
    path.write_text(ORDERS_POLICY.read_text() + "keep_versions: 2\nquarantine_retention_days: 7\n")
    return path


def run(lake, policy_file, run_id, run_date="2026-11-28") -> dict:
    args = ["run", "--policy", str(policy_file), "--lake", lake.root, "--run-date", run_date, "--run-id", run_id]
    assert main(args) == 0
    return json.loads(Path(lake.report_json("orders", run_id)).read_text())


def validated(lake, policy_file, run_id) -> list[str]:
    """Enforces and validates a run at 2026-11-28; its step arguments, for publishing it."""
    common = ["--policy", str(policy_file), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", run_id]
    assert main(["enforce", *common]) == 0 and main(["validate", *common]) == 0
    return common


def publish_killed_in_a_child(script: str, common: list[str]) -> None:
    """Runs ``publish`` in a child process that ``script`` kills with SIGKILL. The child's
    catalog is the lake's own (the test session's is another), so the two JVMs never share
    one embedded metastore."""
    child = subprocess.run(
        [sys.executable, "-c", script, "publish", *common],
        env=child_job_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        timeout=600,
    )
    assert child.returncode == -signal.SIGKILL


def rollback_choice(lake, policy_file, prefix: str) -> tuple[Path, str, str, Path]:
    """``(CURRENT, its version, another retained one, the rollback log)``; run alone, the
    test first publishes two versions (``<prefix>a``, ``<prefix>b``) to choose between."""
    pointer = Path(lake.current_pointer("orders"))
    if not pointer.exists():
        run(lake, policy_file, f"{prefix}a", "2026-11-27")
        run(lake, policy_file, f"{prefix}b")
    current = pointer.read_text().strip()
    other = next(v for v in versions(lake) if v != current)
    return pointer, current, other, Path(lake.root, "reports", "orders", "rollbacks.jsonl")


def versions(lake) -> list[str]:
    return sorted(p.name for p in (Path(lake.root) / "clean" / "orders").iterdir() if p.is_dir())


def files_holding(raw: Path, months: set[str]) -> list[Path]:
    """The source files with rows of ``months``, or rows with no event time."""
    found = []
    for file in raw.rglob("*.parquet"):
        no_time = any(r["ordered_at"] is None for r in pq.read_table(file, columns=["ordered_at"]).to_pylist())
        if no_time or file.parent.name.split("=")[1] in months:
            found.append(file)
    return found


def _same_files(before: Path, after: Path) -> bool:
    if not before.exists():
        return False
    files = sorted(p.name for p in before.iterdir())
    return files == sorted(p.name for p in after.iterdir()) and all(
        (before / f).stat().st_ino == (after / f).stat().st_ino for f in files
    )


def test_newest_versions_are_kept_a_rollback_restores_one_and_old_quarantine_goes(spark, lake, policy_file, capsys):
    assert run(lake, policy_file, "day1", "2026-11-26")["incremental"]["reason"] == "no published version yet"
    day2 = run(lake, policy_file, "day2", "2026-11-27")["incremental"]
    assert versions(lake) == ["day1", "day2"]
    # The next day re-judges the periods that can have changed and takes the others
    # from day1: the same files, hard-linked, not rewritten.
    assert day2["mode"] == "incremental" and day2["previous_version"] == "day1"
    clean = Path(lake.root) / "clean" / "orders"
    months = sorted(p.name for p in (clean / "day2").iterdir() if p.is_dir())
    # 36 months of orders, of which Nov 2024 to Nov 2026 are published (older ones are past
    # retention): all but two are taken over. No consent changed on that day.
    assert (day2["periods_rejudged"], day2["periods_reused"]) == (2, 34)
    assert len(months) == 25
    linked = [m for m in months if _same_files(clean / "day1" / m, clean / "day2" / m)]
    rejudged = ["ordered_at_month=2024-11-01", "ordered_at_month=2026-11-01"]  # retention passed; new orders
    assert sorted(set(months) - set(linked)) == rejudged
    assert sorted(Path(lake.root, "ledger", "orders").iterdir()) == [Path(lake.root, "ledger", "orders", "day2")]
    capsys.readouterr()
    assert main(["status", "--lake", lake.root, "--dataset", "orders"]) == 0
    # It read only the source files of those two months, and those with rows with no
    # event time (judged by every run; this lake has none).
    raw = Path(lake.raw("orders"))
    read, every = files_holding(raw, {"2024-11-01", "2026-11-01"}), list(raw.rglob("*.parquet"))
    assert (day2["source_files_read"], day2["source_files"]) == (len(read), len(every)) == (2, 37)
    summary = "  incremental: 2 periods judged again, 34 taken from day1; 2 of 37 source files read\n"
    status = capsys.readouterr().out
    assert summary in status
    # How old what analysts read is: withdrawals since are not in it.
    assert re.search(
        r"\n  current:     day2, judged at 2026-11-28T00:00:00\+00:00: \d+ days ago; consent changes", status
    )
    day1_rows = read_rows(Path(lake.root) / "clean" / "orders" / "day1")
    capsys.readouterr()
    assert main(["rollback", "--dataset", "orders", "--lake", lake.root, "--to", "day0", "--reason", "x"]) == 2
    assert "no such version (retained: day1, day2)" in capsys.readouterr().err
    assert main(["rollback", "--dataset", "orders", "--lake", lake.root, "--to", "day1", "--reason", "INC-7"]) == 0
    assert current_version_dir(lake.root, "orders").name == "day1"
    assert sorted(map(str, spark.table("clean.orders").collect())) == sorted(
        map(str, spark.read.parquet(str(Path(lake.root) / "clean" / "orders" / "day1")).collect())
    )
    assert len(read_rows(current_version_dir(lake.root, "orders"))) == len(day1_rows)
    log = [json.loads(x) for x in (Path(lake.root) / "reports" / "orders" / "rollbacks.jsonl").read_text().splitlines()]
    assert [(e["from"], e["to"], e["reason"]) for e in log] == [("day2", "day1", "INC-7")]
    # A quarantine folder older than its retention: the next run removes it.
    quarantine = Path(lake.root) / "quarantine" / "orders"
    runs = sorted(p.name for p in quarantine.iterdir())
    assert runs == ["day1", "day2"]  # the generated lake has rows without an event time
    assert oct((quarantine / "day1").stat().st_mode & 0o777) == "0o700"
    # A run stopped after enforce ten days ago: its staged rows are the customers' data
    # too, and go like the quarantine; its step states stay for its report.
    abandoned = ["--policy", str(policy_file), "--lake", lake.root, "--run-date", "2026-11-28"]
    assert main(["enforce", *abandoned, "--run-id", "abandoned"]) == 0
    staging = Path(lake.staging_run("orders", "abandoned"))
    ten_days_ago = time.time() - 10 * 86_400
    for folder in (quarantine / "day1", quarantine / "abandoned", staging):
        for path in [folder, *folder.rglob("*")]:
            os.utime(path, (ten_days_ago, ten_days_ago))
    # The next run judges afresh and publishes over the rolled-back version; with
    # keep_versions: 2 the oldest of the three (the rolled-back one) goes.
    report = run(lake, policy_file, "day3", "2026-11-28")
    assert report["incremental"]["reason"] == "the current version day1 has no ledger"
    assert current_version_dir(lake.root, "orders").name == "day3"
    assert versions(lake) == ["day2", "day3"]
    assert report["removed_versions"] == ["day1"]
    assert report["quarantine_expired"] == ["abandoned", "day1"]
    assert sorted(p.name for p in quarantine.iterdir()) == ["day2", "day3"]
    assert report["staging_expired"] == ["abandoned"]
    assert sorted(p.name for p in staging.iterdir()) == ["enforce.json"]

    # Late changes to the source: one old month's file rewritten with a corrected amount,
    # another month's file removed. The next enforce at the same t judges again only the
    # corrected month, reading its file alone, stages nothing for the removed one, takes
    # the other months from day3, and stages what a full recomputation does.
    corrected_file = next((raw / "order_month=2025-03-01").glob("*.parquet"))
    table = pq.read_table(corrected_file)
    amounts = table.column("amount").to_pylist()
    amounts[0] += 1
    rewritten = table.set_column(
        table.schema.get_field_index("amount"), "amount", pa.array(amounts, table.schema.field("amount").type)
    )
    corrected_file.unlink()
    pq.write_table(rewritten, corrected_file.with_name("corrected.parquet"))
    shutil.rmtree(raw / "order_month=2025-06-01")
    staged = {}
    for run_id, extra in (("day4", []), ("day4-full", ["--full"])):
        args = ["--lake", lake.root, "--run-date", "2026-11-28", "--run-id", run_id, *extra]
        assert main(["enforce", "--policy", str(policy_file), *args]) == 0
        staged[run_id] = json.loads(Path(lake.step_state("orders", run_id, "enforce")).read_text())
    day4 = staged["day4"]["incremental"]
    assert (day4["mode"], day4["previous_version"]) == ("incremental", "day3")
    assert (day4["periods_rejudged"], day4["periods_reused"], day4["source_files_read"]) == (1, 34, 1)
    assert staged["day4"]["counts"] == staged["day4-full"]["counts"]
    months = sorted(p.name for p in Path(staged["day4"]["staging_path"]).iterdir() if p.is_dir())
    assert "ordered_at_month=2025-06-01" not in months and len(months) == 24
    assert partitioned_rows(staged["day4"]["staging_path"]) == partitioned_rows(staged["day4-full"]["staging_path"])

    # A file corrected in place, as `cp -p` or `rsync -a` would: the same name, size and
    # modification time. Its new inode shows it, so its month is judged again.
    replaced = next((raw / "order_month=2025-04-01").glob("*.parquet"))
    original = pq.read_table(replaced)
    replaced.with_name(f".{replaced.name}.crc").unlink()  # Hadoop's checksum of the old bytes
    pq.write_table(original, replaced, compression="none")  # a size the correction can keep
    assert run(lake, policy_file, "fix1", "2026-11-28")["incremental"]["mode"] == "incremental"
    before = replaced.stat()
    amounts = original.column("amount").to_pylist()
    amounts[0] = decimal.Decimal("987654.25")  # no other order has it: the dictionary keeps its size
    corrected = original.set_column(
        original.schema.get_field_index("amount"), "amount", pa.array(amounts, original.schema.field("amount").type)
    )
    copy = replaced.with_name("corrected-copy.parquet")
    pq.write_table(corrected, copy, compression="none")
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
    copy.replace(replaced)
    after = replaced.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    for run_id, extra in (("fix2", []), ("fix2-full", ["--full"])):
        args = ["--lake", lake.root, "--run-date", "2026-11-28", "--run-id", run_id, *extra]
        assert main(["enforce", "--policy", str(policy_file), *args]) == 0
        staged[run_id] = json.loads(Path(lake.step_state("orders", run_id, "enforce")).read_text())
    fix2 = staged["fix2"]["incremental"]
    assert (fix2["mode"], fix2["periods_rejudged"], fix2["source_files_read"]) == ("incremental", 1, 1)
    corrected_rows = partitioned_rows(staged["fix2"]["staging_path"])
    assert corrected_rows == partitioned_rows(staged["fix2-full"]["staging_path"])
    assert sum(("amount", "987654.25") in row for row in corrected_rows) == 1


def test_a_step_waits_while_another_holds_the_datasets_lock(spark, lake, policy_file, capsys):
    """A backfill's runs and a shell's `consentgate run` are not bound by the DAG's
    max_active_runs: each step takes the dataset's lock, and one that finds it taken waits."""
    before = current_version_dir(lake.root, "orders").name
    target = next(v for v in versions(lake) if v != before)
    rollback = ["rollback", "--dataset", "orders", "--lake", lake.root, "--to", target, "--reason", "INC-8"]
    outcome = []
    capsys.readouterr()
    with dataset_lock(lake, "orders", "day9 publish"):
        waiting = threading.Thread(target=lambda: outcome.append(main(rollback)))
        waiting.start()
        said, deadline = "", time.monotonic() + 120
        while '"event": "waiting_for_lock"' not in said and time.monotonic() < deadline:
            time.sleep(0.2)
            said += capsys.readouterr().out
        [line] = [json.loads(x) for x in said.splitlines() if "waiting_for_lock" in x]
        assert line["held_by"] == "day9 publish" and line["step"] == "rollback"
        assert waiting.is_alive() and outcome == []
        assert current_version_dir(lake.root, "orders").name == before
    waiting.join(timeout=300)
    assert outcome == [0]
    assert current_version_dir(lake.root, "orders").name == target


def test_a_publish_that_stopped_after_moving_the_output_is_taken_up_by_its_retry(
    spark, lake, policy_file, monkeypatch, capsys
):
    """Stopped before the move, then after it (the metastore busy, say): each retry goes on
    from where the last stopped, with the version the first attempt chose."""
    pointer = Path(lake.current_pointer("orders"))
    if not pointer.exists():  # run alone: a version to roll back to at the end
        run(lake, policy_file, "day0", "2026-11-27")
    common = validated(lake, policy_file, "day5")
    before = pointer.read_text()
    staged_rows = partitioned_rows(lake.staging_data("orders", "day5"))
    import transforms.publish as publish

    real_move, swap = publish.move, publish.repoint_current

    def disk_full(*args):
        raise OSError("no space left")

    monkeypatch.setattr(publish, "move", disk_full)
    assert main(["publish", *common]) == 1
    assert json.loads(Path(lake.step_state("orders", "day5", "publishing")).read_text())["version"] == "day5"

    def copied_in_part_then_killed(spark_, source, target):
        # A move on an object store is a copy, then the source's deletion.
        shutil.copytree(source, target)
        sorted(Path(target).rglob("*.parquet"))[-1].unlink()  # not copied yet
        raise OSError("killed")

    monkeypatch.setattr(publish, "move", copied_in_part_then_killed)
    assert main(["publish", *common]) == 1
    monkeypatch.setattr(publish, "move", real_move)

    def busy_catalog(*args):
        raise RuntimeError("the metastore is busy")

    monkeypatch.setattr(publish, "repoint_current", busy_catalog)
    capsys.readouterr()
    assert main(["publish", *common]) == 1
    assert "internal error: RuntimeError" in capsys.readouterr().err
    assert pointer.read_text() == before
    assert not Path(lake.staging_data("orders", "day5")).exists()  # moved into clean/ already
    assert json.loads(Path(lake.step_state("orders", "day5", "publishing")).read_text())["pointed"] is False
    monkeypatch.setattr(publish, "repoint_current", swap)
    for attempt in ("retry", "cleared after success"):
        assert main(["publish", *common]) == 0, attempt
        state = json.loads(Path(lake.step_state("orders", "day5", "publish")).read_text())
        assert (state["published"], state["version"]) == (True, "day5")
        assert current_version_dir(lake.root, "orders").name == "day5"
        assert "day5.2" not in versions(lake)
        assert partitioned_rows(str(current_version_dir(lake.root, "orders"))) == staged_rows
        assert table_folder(spark).name == "day5"
    # Once another version is made current (a rollback here), clearing the publish again
    # does not bring day5 back over that decision.
    other = next(v for v in versions(lake) if v != "day5")
    assert main(["rollback", "--dataset", "orders", "--lake", lake.root, "--to", other, "--reason", "INC-9"]) == 0
    capsys.readouterr()
    assert main(["publish", *common]) == 2
    assert capsys.readouterr().err == (
        f"consentgate: run day5 published day5 (or was stopped while doing so), which is not the current version "
        f"({other}): a cleared publish does not bring it back; run the DAG again to judge anew\n"
    )
    assert current_version_dir(lake.root, "orders").name == other and "day5" in versions(lake)


# Killed after the catalog points at the new version, before CURRENT does.
KILLED_DURING_THE_SWAP = """
import os, signal, sys
import transforms.publish as publish
from transforms.cli import main

write_text = publish.write_text

def killed_before_current(path, text):
    if path.endswith("CURRENT"):
        os.kill(os.getpid(), signal.SIGKILL)
    write_text(path, text)

publish.write_text = killed_before_current
sys.exit(main(sys.argv[1:]))
"""


# Killed once the run's ledger is moved to its version, before the swap is recorded.
KILLED_AFTER_MOVING_THE_LEDGER = """
import os, signal, sys
import transforms.publish as publish
from transforms.cli import main

publish_ledger = publish.publish_ledger

def killed_after(*args):
    publish_ledger(*args)
    os.kill(os.getpid(), signal.SIGKILL)

publish.publish_ledger = killed_after
sys.exit(main(sys.argv[1:]))
"""


def test_a_publish_killed_while_moving_its_ledger_is_finished_by_its_retry(spark, lake, policy_file):
    """Nothing is swapped yet: the retry publishes (it refused, as if killed during the swap)."""
    common = validated(lake, policy_file, "ledgerkill")
    publish_killed_in_a_child(KILLED_AFTER_MOVING_THE_LEDGER, common)
    assert json.loads(Path(lake.step_state("orders", "ledgerkill", "publishing")).read_text())["pointed"] is False
    assert main(["publish", *common]) == 0
    assert Path(lake.current_pointer("orders")).read_text() == "ledgerkill\n"
    assert table_folder(spark).name == "ledgerkill"
    assert sorted(p.name for p in Path(lake.path("ledger", "orders")).iterdir()) == ["ledgerkill"]


def test_a_rollback_is_logged_before_its_swap_and_a_failed_one_says_so(lake, policy_file, monkeypatch):
    import transforms.publish as publish

    pointer, current, other, log = rollback_choice(lake, policy_file, "day9")
    logged = log.read_text().splitlines() if log.exists() else []

    def catalog_down(*args):
        raise OSError("the metastore is down")

    monkeypatch.setattr(publish, "repoint_current", catalog_down)
    assert main(["rollback", "--dataset", "orders", "--lake", lake.root, "--to", other, "--reason", "INC-12"]) == 1
    lines = [json.loads(line) for line in log.read_text().splitlines()[len(logged) :]]
    assert [(e["from"], e["to"], e["reason"], e.get("failed")) for e in lines] == [
        (current, other, "INC-12", None),
        (current, other, "INC-12", "OSError"),
    ]
    assert pointer.read_text().strip() == current


def test_a_publish_whose_current_pointer_failed_after_the_catalog_is_not_retried(
    spark, lake, policy_file, monkeypatch, capsys
):
    """The catalog already read the version (analysts saw it): as for a job killed there,
    a retry must not redo the swap later, over what was decided since."""
    import transforms.publish as publish

    if not Path(lake.current_pointer("orders")).exists():  # run alone: a current version
        run(lake, policy_file, "day0", "2026-11-27")
    before = Path(lake.current_pointer("orders")).read_text()
    common = validated(lake, policy_file, "halfswap")
    write_text = publish.write_text

    def disk_full_on_current(path, text, *args):
        if path.endswith("CURRENT"):
            raise OSError("no space left")
        write_text(path, text, *args)

    monkeypatch.setattr(publish, "write_text", disk_full_on_current)
    assert main(["publish", *common]) == 1
    monkeypatch.setattr(publish, "write_text", write_text)
    assert table_folder(spark).name == "halfswap" and Path(lake.current_pointer("orders")).read_text() == before
    assert json.loads(Path(lake.step_state("orders", "halfswap", "publishing")).read_text())["pointed"] is True
    capsys.readouterr()
    assert main(["publish", *common]) == 2
    assert "a cleared publish does not bring it back" in capsys.readouterr().err
    run(lake, policy_file, "after-halfswap")  # the next run makes the two pointers agree
    assert table_folder(spark).name == "after-halfswap"


def test_a_publish_whose_clean_up_fails_is_reported_published(lake, policy_file, monkeypatch, capsys):
    """The version is current once the swap is done: removing older ones failing after it
    does not make the run look unpublished (its DAG run failed, its Asset was not updated)."""
    import transforms.publish as publish

    def fails(*args):
        raise OSError("permission denied")

    monkeypatch.setattr(publish, "prune_versions", fails)
    report = run(lake, policy_file, "cleanup-fails")
    assert report["published"] and Path(lake.current_pointer("orders")).read_text() == "cleanup-fails\n"
    assert report["cleanup_error"] == "removing older versions failed: OSError"
    capsys.readouterr()
    assert main(["status", "--lake", lake.root, "--dataset", "orders"]) == 0
    assert "  cleanup_error: removing older versions failed: OSError\n" in capsys.readouterr().out


def test_a_run_judged_on_a_version_rolled_back_since_is_not_published(lake, policy_file, capsys):
    """Its months taken from the version would come back over the rollback away from it."""
    if not Path(lake.current_pointer("orders")).exists():  # run alone: a version to roll back to
        run(lake, policy_file, "base0", "2026-11-27")
    run(lake, policy_file, "base1")
    other = next(v for v in versions(lake) if v != "base1")
    common = validated(lake, policy_file, "ontop")
    plan = json.loads(Path(lake.step_state("orders", "ontop", "enforce")).read_text())["incremental"]
    assert (plan["mode"], plan["previous_version"]) == ("incremental", "base1") and plan["periods_reused"] > 0
    assert main(["rollback", "--dataset", "orders", "--lake", lake.root, "--to", other, "--reason", "INC-11"]) == 0
    capsys.readouterr()
    assert main(["publish", *common]) == 2
    assert capsys.readouterr().err == (
        f"consentgate: run ontop took periods from version base1, which is no longer the current version ({other}): "
        "run it again (enforce) to judge on the current one\n"
    )
    assert Path(lake.current_pointer("orders")).read_text() == f"{other}\n"


def test_an_output_changed_after_its_validation_is_not_published(lake, policy_file, capsys):
    """Publish moves what was validated, byte for byte: files changed since (an erasure
    purge rewrote it, a hand edited it) are refused, and the current version stays."""
    common = validated(lake, policy_file, "changed-after")
    staged = Path(lake.staging_data("orders", "changed-after"))
    part = sorted(staged.rglob("part-*.parquet"))[0]
    part.unlink()
    part.with_name(f".{part.name}.crc").unlink(missing_ok=True)
    pointer = Path(lake.current_pointer("orders"))
    current = pointer.read_text() if pointer.exists() else None
    capsys.readouterr()
    assert main(["publish", *common]) == 2
    assert capsys.readouterr().err == (
        f"consentgate: {staged}: not the output validated (its files changed since); run enforce again\n"
    )
    assert (pointer.read_text() if pointer.exists() else None) == current and staged.exists()
    shutil.rmtree(staged.parent)


def test_a_moved_output_changed_since_its_validation_is_removed_not_kept_for_a_rollback(
    lake, policy_file, monkeypatch, capsys
):
    """A publish stopped after moving the output into clean/ (before the swap); the output
    then changes (a purge rewrote it, say): the retry refuses it and removes it, so that it
    does not wait among the retained versions for a rollback to make it current."""
    import transforms.publish as publish

    common = validated(lake, policy_file, "moved-changed")

    def stopped(*args):
        raise OSError("the job died here")

    monkeypatch.setattr(publish, "publish_ledger", stopped)
    assert main(["publish", *common]) == 1
    monkeypatch.undo()
    moved = Path(lake.clean_version("orders", "moved-changed"))
    part = sorted(moved.rglob("part-*.parquet"))[0]
    part.unlink()
    part.with_name(f".{part.name}.crc").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["publish", *common]) == 2
    assert capsys.readouterr().err == (
        f"consentgate: {moved}: not the output validated (its files changed since); run enforce again\n"
    )
    assert not moved.exists() and "moved-changed" not in versions(lake)


def test_a_publish_killed_during_the_swap_is_not_retried_and_the_next_run_publishes(spark, lake, policy_file, capsys):
    """A SIGKILL runs no clean-up: the intent says the swap may have happened, so the
    retry refuses (it cannot tell what analysts saw), and the next run replaces it all."""
    pointer = Path(lake.current_pointer("orders"))
    if not pointer.exists():  # run alone: a current version to keep
        run(lake, policy_file, "day0", "2026-11-27")
    before = pointer.read_text()
    common = validated(lake, policy_file, "killed")
    publish_killed_in_a_child(KILLED_DURING_THE_SWAP, common)
    assert pointer.read_text() == before
    intent = json.loads(Path(lake.step_state("orders", "killed", "publishing")).read_text())
    assert (intent["version"], intent["pointed"]) == ("killed", True)
    assert "killed" in versions(lake) and not Path(lake.staging_data("orders", "killed")).exists()
    capsys.readouterr()
    assert main(["publish", *common]) == 2
    assert capsys.readouterr().err == (
        f"consentgate: run killed published killed (or was stopped while doing so), which is not the current "
        f"version ({before.strip()}): a cleared publish does not bring it back; run the DAG again to judge anew\n"
    )
    assert pointer.read_text() == before
    report = run(lake, policy_file, "after-kill")
    assert pointer.read_text() == "after-kill\n"
    assert table_folder(spark).name == "after-kill"
    published = partitioned_rows(current_version_dir(lake.root, "orders"))
    assert len(published) == report["rows_out"]
    # The killed publish had already replaced the ledger: the next run judges everything.
    assert report["incremental"]["reason"] == f"the current version {before.strip()} has no ledger"


def test_a_changed_policy_judges_every_period_again(spark, lake, policy_file, tmp_path):
    """Reusing a period made under another rule would publish it under the old policy."""
    run(lake, policy_file, "day6")  # a current version with a ledger, whatever ran before
    current = Path(lake.current_pointer("orders")).read_text().strip()
    assert current == "day6"
    masked = tmp_path / "orders.yml"
    rule = ("  zip_code:\n    consented: keep", "  zip_code:\n    consented: mask:2")
    masked.write_text(policy_file.read_text().replace(*rule))
    args = ["--policy", str(masked), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", "day7"]
    assert main(["enforce", *args]) == 0
    enforced = json.loads(Path(lake.step_state("orders", "day7", "enforce")).read_text())
    assert enforced["incremental"]["mode"] == "full"
    assert enforced["incremental"]["reason"] == f"policy_sha256 changed since the current version {current}"
    assert enforced["incremental"]["periods_reused"] == 0
    staged = read_rows(Path(enforced["staging_path"]))
    zips = [r["zip_code"] for r in staged if r["record_state"] == "consented"]
    # Every consented row of every month: three stars and the last two digits.
    assert zips and all(re.fullmatch(r"\*{3}\d{2}", z) for z in zips), sorted({z[:3] for z in zips})
    assert len(staged) == enforced["rows_out"]


def test_another_retired_key_judges_every_period_again(lake, policy_file, monkeypatch):
    """Tombstones that recorded no key are matched under every retired key too: under
    another one they may erase subjects the ledger holds as published."""
    run(lake, policy_file, "day7a")
    current = Path(lake.current_pointer("orders")).read_text().strip()
    monkeypatch.setenv("CONSENTGATE_HMAC_PREVIOUS_KEYS", json.dumps(["a-retired-key-of-2025-q4-0042"]))
    args = ["--policy", str(policy_file), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", "day7b"]
    assert main(["enforce", *args]) == 0
    enforced = json.loads(Path(lake.step_state("orders", "day7b", "enforce")).read_text())
    assert enforced["incremental"]["reason"] == f"retired_hmac_keys changed since the current version {current}"


def test_a_rollback_is_refused_where_it_would_mislead_or_mix_keys(spark, lake, policy_file, capsys):
    pointer, current, other, log = rollback_choice(lake, policy_file, "day8")
    logged = log.read_text() if log.exists() else None

    def rollback(*args: str) -> str:
        capsys.readouterr()
        assert main(["rollback", "--lake", lake.root, *args]) == 2
        return capsys.readouterr().err

    clean = Path(lake.root, "clean", "orders")
    assert rollback("--dataset", "orders", "--to", current, "--reason", "x").endswith(
        f"{clean / current}: already the current version\n"
    )
    assert "--reason is required" in rollback("--dataset", "orders", "--to", other, "--reason", " ")
    assert rollback("--dataset", "orders-to-acme_ads", "--to", other, "--reason", "x").endswith(
        "orders-to-acme_ads: a share's export is never rolled back; run the share again\n"
    )
    marker = clean / other / "_keys.json"
    recorded = marker.read_text()
    keys = json.loads(recorded)
    keys["hmac"]["fingerprint"] = "0" * 16
    marker.write_text(json.dumps(keys))
    current_marker = clean / current / "_keys.json"
    current_recorded = current_marker.read_text()
    try:
        assert rollback("--dataset", "orders", "--to", other, "--reason", "x").endswith(
            f"{clean / other}: made with another pseudonymisation key than the current version\n"
        )
        # The encryption key too (publish retires such versions, but a clean-up can fail).
        keys = json.loads(recorded)
        keys["encryption"] = {"version": "1", "fingerprint": "1" * 16}
        marker.write_text(json.dumps(keys))
        now = json.loads(current_recorded)
        now["encryption"] = {"version": "2", "fingerprint": "2" * 16}
        current_marker.write_text(json.dumps(now))
        assert rollback("--dataset", "orders", "--to", other, "--reason", "x").endswith(
            f"{clean / other}: made with another encryption key than the current version\n"
        )
    finally:
        marker.write_text(recorded)
        current_marker.write_text(current_recorded)
    assert pointer.read_text().strip() == current
    assert (log.read_text() if log.exists() else None) == logged  # nothing logged for a refusal


@pytest.fixture
def purge_lake(spark, tmp_path_factory):
    with generated_lake(spark, tmp_path_factory, "purge_lake", RUN_DATE, customers=120, orders=900, seed=37) as lake:
        yield lake


def test_an_erasure_reaches_every_retained_staged_and_failed_output(spark, purge_lake, policy_file, tmp_path):
    """Not only the current version: an older retained one (a rollback target), an output
    staged and not yet published, and one that failed validation all lose the subject."""
    lake = purge_lake
    keeping_three = tmp_path / "orders.yml"
    keeping_three.write_text(policy_file.read_text().replace("keep_versions: 2", "keep_versions: 3"))
    policy_file = keeping_three
    run(lake, policy_file, "v1", "2026-11-26")
    run(lake, policy_file, "v2", "2026-11-27")
    staged_args = ["--policy", str(policy_file), "--lake", lake.root, "--run-date", "2026-11-27"]
    assert main(["enforce", *staged_args, "--run-id", "waiting"]) == 0
    assert main(["validate", *staged_args, "--run-id", "waiting"]) == 0
    assert main(["enforce", *staged_args, "--run-id", "failing"]) == 0
    state_path = Path(lake.step_state("orders", "failing", "enforce"))
    state = json.loads(state_path.read_text())
    state["totals"]["kept"] += 1  # the row-count expectation fails it
    state_path.write_text(json.dumps(state))
    assert main(["validate", *staged_args, "--run-id", "failing"]) == 3
    folders = {
        "v1": Path(lake.clean_version("orders", "v1")),
        "v2": Path(lake.clean_version("orders", "v2")),
        "waiting": Path(lake.staging_data("orders", "waiting")),
        "failing": Path(lake.failed_output("orders", "failing")),
    }

    def pseudonyms(folder: Path) -> set[str]:
        return {r["customer_id"] for r in read_rows(folder)} - {None}

    # A consented customer present in all four, who then asks to be erased.
    raw_ids = {r["customer_id"] for r in read_rows(lake.raw("orders")) if r["customer_id"]}
    by_pseudonym = {pseudonym(c): c for c in raw_ids}
    everywhere = set.intersection(*(pseudonyms(f) for f in folders.values()))
    erased = sorted(everywhere)[0]
    rows_before = {name: sorted_rows(folder) for name, folder in folders.items()}
    append_raw(spark, lake, "erasure_requests", [(by_pseudonym[erased], datetime(2026, 11, 28, 9, 0, tzinfo=UTC))])

    report = run(lake, policy_file, "v3")
    assert report["erasure"]["new_tombstones"] == 1
    assert sorted(report["erasure"]["purged_versions"]) == ["v1", "v2.erased"]
    assert report["erasure"]["purged_staging"] == ["waiting"]
    assert report["erasure"]["purged_quarantine"] == ["failing/failed_output"]
    # What "waiting" validated is not what it holds now: it cannot publish without validating again.
    assert not Path(lake.step_state("orders", "waiting", "validate")).exists()
    assert main(["publish", *staged_args, "--run-id", "waiting"]) == 2
    folders["v2"] = Path(lake.clean_version("orders", "v2.erased"))
    for name, folder in folders.items():
        # Exactly the erased customer's rows left; every other row is as it was.
        assert sorted_rows(folder) == [r for r in rows_before[name] if r["customer_id"] != erased] != rows_before[name]
    assert erased not in pseudonyms(current_version_dir(lake.root, "orders"))


def sorted_rows(folder: Path) -> list[dict]:
    return sorted(read_rows(folder), key=lambda r: r["order_id"])


def test_an_erasure_that_purges_a_waiting_run_s_quarantine_makes_it_enforce_again(
    spark, purge_lake, policy_file, capsys
):
    """The waiting run's validation compares its output with its quarantine: once a purge
    took rows out of the quarantine, validating (or publishing) it is refused with the
    reason, not failed as if enforce had miscounted; the purged rows stay owner-only."""
    lake = purge_lake
    erased = "C9990001"  # one order, with no event time: quarantined, in no staged output
    no_time = ("Q1", erased, "q@example.org", "+1-555-555-0100", "Q Person", date(1970, 1, 1), "99999", "1 Q St",
               None, "web", "test", 1, None)  # fmt: skip
    append_raw(spark, lake, "orders", [no_time])
    staged_args = ["--policy", str(policy_file), "--lake", lake.root, "--run-date", "2026-11-27"]
    assert main(["enforce", *staged_args, "--run-id", "q-waiting"]) == 0
    assert main(["validate", *staged_args, "--run-id", "q-waiting"]) == 0
    quarantine = Path(lake.quarantine_rows("orders", "q-waiting"))
    held = sorted_rows(quarantine)
    assert [r["order_id"] for r in held if r["customer_id"] == erased] == ["Q1"]
    append_raw(spark, lake, "erasure_requests", [(erased, datetime(2026, 11, 28, 9, 0, tzinfo=UTC))])

    report = run(lake, policy_file, "q-after")
    assert "q-waiting/rows" in report["erasure"]["purged_quarantine"]
    assert sorted_rows(quarantine) == [r for r in held if r["customer_id"] != erased] != held
    assert not Path(lake.step_state("orders", "q-waiting", "validate")).exists()
    marker = lake.step_state("orders", "q-waiting", "purged_for_erasure")
    capsys.readouterr()
    assert main(["publish", *staged_args, "--run-id", "q-waiting"]) == 2
    assert main(["validate", *staged_args, "--run-id", "q-waiting"]) == 2
    assert capsys.readouterr().err == (
        f"consentgate: {lake.step_state('orders', 'q-waiting', 'validate')}: missing; run the validate step for run "
        "q-waiting first\n"
        f"consentgate: {marker}: the staged output was purged for an erasure since; run enforce again\n"
    )
    modes = {p.stat().st_mode & 0o777 for p in quarantine.rglob("*")}
    assert modes <= {0o700, 0o600} and (quarantine.stat().st_mode & 0o777) == 0o700


def test_a_purge_stopped_while_swapping_a_staged_output_leaves_it_unpublishable(
    spark, lake, policy_file, monkeypatch, capsys
):
    """The purge forgets the waiting run's validation before it touches its folder: a job
    that dies between the two must not leave a passed validation of what changed. (Last
    in the module: it leaves an erasure request behind.)"""
    staged_args = ["--policy", str(policy_file), "--lake", lake.root, "--run-date", "2026-11-27"]
    assert main(["enforce", *staged_args, "--run-id", "waiting"]) == 0
    assert main(["validate", *staged_args, "--run-id", "waiting"]) == 0
    waiting = Path(lake.staging_data("orders", "waiting"))
    staged_rows = partitioned_rows(waiting)
    raw_ids = {r["customer_id"] for r in read_rows(lake.raw("orders")) if r["customer_id"]}
    by_pseudonym = {pseudonym(c): c for c in raw_ids}
    erased = sorted({r["customer_id"] for r in read_rows(waiting)} - {None})[0]
    append_raw(spark, lake, "erasure_requests", [(by_pseudonym[erased], datetime(2026, 11, 28, 9, 0, tzinfo=UTC))])
    import transforms.erasure as erasure

    real_remove = erasure.remove

    def killed_at_the_staged_output(spark, path):
        if path == str(waiting):
            raise OSError("the job died here")
        real_remove(spark, path)

    monkeypatch.setattr(erasure, "remove", killed_at_the_staged_output)
    assert (
        main(["run", "--policy", str(policy_file), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", "v2"])
        == 1
    )
    assert partitioned_rows(waiting) == staged_rows  # not purged yet ...
    assert not Path(lake.step_state("orders", "waiting", "validate")).exists()  # ... nor publishable
    capsys.readouterr()
    assert main(["publish", *staged_args, "--run-id", "waiting"]) == 2
    validation = lake.step_state("orders", "waiting", "validate")
    assert (
        capsys.readouterr().err == f"consentgate: {validation}: missing; run the validate step for run waiting first\n"
    )
    # Nor does validating it again make it publishable: it still holds the erased
    # subject, whose erasure came after its enforce.
    assert main(["validate", *staged_args, "--run-id", "waiting"]) == 2
    marker = lake.step_state("orders", "waiting", "purged_for_erasure")
    assert capsys.readouterr().err == (
        f"consentgate: {marker}: the staged output was purged for an erasure since; run enforce again\n"
    )
    assert main(["publish", *staged_args, "--run-id", "waiting"]) == 2
