"""The privacy_orders DAG on a small generated lake, run by the real Airflow scheduler
(API server, scheduler and DAG processor on the embedded SQLite database) on a Spark
standalone cluster (a master and one worker on 127.0.0.1, started from the pyspark
installation): the published rows and the report are checked against the pure-Python
reference model and against the same job in local mode. A run without a key goes
through `airflow dags test` in local mode."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import ORDERS_POLICY, REPO, SHORT_JVM_OPTIONS, SMALL_INPUT_SPARK_CONF, TEST_KEY
from tests.lakecheck import counts_by_reason, current_version_dir, expected_reasons, personal_values_in, read_rows
from tests.reference import ACTIONS
from transforms.enforce import run_enforce
from transforms.generate import generate_lake, write_orders
from transforms.keys import load_run_keys
from transforms.lake import Lake
from transforms.policy import load_policy

pytestmark = pytest.mark.integration
RUN_DATE = date(2026, 11, 28)
LOGICAL_DATE = "2026-11-29"  # its data interval ends at RUN_DATE + 1 day, 00:00 UTC


def airflow_env(airflow_home: Path, lake: Lake, key: str | None, master: str = "local[2]") -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark_connection(master)),
        "CONSENTGATE_LAKE": lake.root,
        "CONSENTGATE_DRIVER_MEMORY": "1g",
        "CONSENTGATE_DATA_DOCS": "on",
        # Sized for a few thousand rows, as a deployment would size its jobs.
        "CONSENTGATE_SPARK_CONF": json.dumps(SMALL_INPUT_SPARK_CONF),
        **SHORT_JVM_OPTIONS,
    }
    env.pop("CONSENTGATE_HMAC_KEY", None)
    if key:
        env["CONSENTGATE_HMAC_KEY"] = key
    return env


def spark_connection(master: str) -> dict:
    """``spark_default`` as a deployment writes it: the master URL's host, and its port apart."""
    if master.startswith("spark://"):
        host, port = master.rsplit(":", 1)
        return {"conn_type": "spark", "host": host, "port": int(port)}
    return {"conn_type": "spark", "host": master}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def query(airflow_home: Path, sql: str, *args) -> tuple | None:
    """One row from the metadata database; None while the scheduler holds its lock."""
    try:
        with sqlite3.connect(airflow_home / "airflow.db", timeout=10) as db:
            return db.execute(sql, args).fetchone()
    except sqlite3.OperationalError:
        return None


def dag_run_state(airflow_home: Path, dag_id: str) -> str | None:
    """The state of the DAG's latest run."""
    row = query(airflow_home, "select state from dag_run where dag_id = ? order by id desc limit 1", dag_id)
    return row[0] if row else None


def task_states(airflow_home: Path, run_id: str) -> dict[str, str]:
    with sqlite3.connect(airflow_home / "airflow.db", timeout=10) as db:
        rows = db.execute("select task_id, state from task_instance where run_id = ?", (run_id,)).fetchall()
    return dict(rows)


def is_serialized(airflow_home: Path, dag_id: str) -> bool:
    row = query(airflow_home, "select count(*) from serialized_dag where dag_id = ?", dag_id)
    return bool(row and row[0])


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(1)


@contextmanager
def airflow_services(env: dict[str, str], log: Path):
    """The API server (tasks report to its Execution API), the scheduler and the DAG
    processor, as a deployment runs them; stopped, with their children, on the way out."""
    port = free_port()
    env = {
        **env,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Only the run this test triggers: no scheduled runs of any DAG.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        # The DAG files do not change while the test runs: parsed once, not every 30 s
        # (five parses of a few CPU-seconds each, on a machine the other tests keep busy).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        # The test triggers its run through the REST API, as the UI does, with a token
        # the simple auth manager gives without credentials.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    services = []
    with log.open("a") as out:
        try:
            for command in (["api-server", "--port", str(port)], ["scheduler"], ["dag-processor"]):
                services.append(
                    subprocess.Popen(
                        [str(Path(sys.executable).parent / "airflow"), *command],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            yield env
        finally:
            stop(services)


def stop(services: list[subprocess.Popen]) -> None:
    """SIGTERM to every service and everything it started (task runners have process
    groups of their own, and spark-submit starts a JVM), then SIGKILL to what is left."""
    import psutil

    tree = []
    for service in services:
        with suppress(psutil.NoSuchProcess):
            parent = psutil.Process(service.pid)
            tree += [parent, *parent.children(recursive=True)]
    for process in tree:
        with suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(tree, timeout=30)
    for process in alive:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=10)
    for service in services:
        service.wait(timeout=10)


@contextmanager
def standalone_cluster(work: Path, log: Path):
    """A Spark standalone master and one worker (2 cores, 2 GiB) on 127.0.0.1, from the
    pyspark installation; yields the master URL and stops both, executors included."""
    import pyspark

    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    port, ui_port = free_port(), free_port()
    env = {**os.environ, "SPARK_HOME": str(spark_class.parent.parent), **SHORT_JVM_OPTIONS}
    master = f"spark://127.0.0.1:{port}"
    commands = [
        ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port)]
        + ["--webui-port", str(ui_port)],
        ["org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--cores", "2", "--memory", "2g"]
        + ["--webui-port", str(free_port()), "--work-dir", str(work)],
    ]
    processes = []
    with log.open("a") as out:
        try:
            for command in commands:
                processes.append(
                    subprocess.Popen(
                        [str(spark_class), *command],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            wait_for(lambda: alive_workers(ui_port) == 1, 120, "the Spark worker to register with the master")
            yield master
        finally:
            stop(processes)


def alive_workers(ui_port: int) -> int:
    from urllib.request import urlopen

    try:
        with urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except OSError:
        return 0


def trigger(env: dict[str, str], dag_id: str, logical_date: str) -> dict:
    """Triggers a DAG run through the REST API, once the API server answers. Not with
    `airflow dags trigger --logical-date`: in Airflow 3.3 that takes the run's data
    interval from the time of triggering, so the run would judge yesterday's end rather
    than the logical date's (the REST API and the UI infer it from the logical date)."""
    from urllib.error import URLError
    from urllib.request import Request, urlopen

    base = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"

    tokens = []

    def got_a_token() -> bool:
        try:
            with urlopen(f"{base}/auth/token", timeout=10) as response:
                tokens.append(json.load(response)["access_token"])
                return True
        except (URLError, OSError):
            return False

    wait_for(got_a_token, 180, "the API server to answer")
    request = Request(
        f"{base}/api/v2/dags/{dag_id}/dagRuns",
        data=json.dumps({"logical_date": logical_date}).encode(),
        headers={"Authorization": f"Bearer {tokens[-1]}", "Content-Type": "application/json"},
        method="POST",
    )
    with urlopen(request, timeout=30) as response:
        return json.load(response)


def airflow(env, *args, log: Path) -> int:
    with log.open("a") as out:
        return subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
        ).returncode


# Unique fake personal data planted in the input: none of it may appear in any log,
# report, XCom, Great Expectations result or Data Docs page of the run.
CANARIES = [f"{kind}-{uuid.uuid4().hex}" for kind in ("email", "name", "phone", "street")]


def plant_canaries(spark, lake: Lake) -> None:
    reasons = expected_reasons(lake.root, RUN_DATE)
    orders = spark.read.parquet(lake.raw("orders"))
    by_id = {r.order_id: r for r in orders.collect()}
    picked = [next(o for o, reason in reasons.items() if reason == wanted) for wanted in ("consented", "no_consent")]
    email, name, phone, street = CANARIES
    rows = []
    for n, order_id in enumerate([*picked, picked[0], picked[1]]):
        row = by_id[order_id].asDict()
        row.update(order_id=f"CANARY{n}", email=f"{email}@canary.invalid", full_name=name, phone=phone)
        row.update(street_address=street)
        if n == 2:
            row["ordered_at"] = None  # quarantined: no event time
        if n == 3:
            row["customer_id"] = None  # quarantined: no subject
        rows.append(row)
    write_orders(spark.createDataFrame(rows, orders.schema), lake, "append")


def canaries_in(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory, dag_lake):
    """One Airflow home (SQLite metadata database) for the module: migrated once."""
    home = tmp_path_factory.mktemp("airflow_home")
    log = home / "migrate.log"
    assert airflow(airflow_env(home, dag_lake, None), "db", "migrate", log=log) == 0, log.read_text()[-2000:]
    return home


@pytest.fixture(scope="module")
def dag_lake(spark, tmp_path_factory):
    lake = Lake.at(str(tmp_path_factory.mktemp("dag_lake")))
    generate_lake(spark, lake, customers=300, orders=3000, seed=5, run_date=RUN_DATE)
    plant_canaries(spark, lake)
    return lake


def test_the_dag_on_a_standalone_cluster_publishes_what_local_mode_and_the_reference_model_give(
    spark, dag_lake, airflow_home, tmp_path
):
    log = tmp_path / "airflow.log"
    worker_dir = tmp_path / "spark-worker"
    with standalone_cluster(worker_dir, tmp_path / "cluster.log") as master:
        with airflow_services(airflow_env(airflow_home, dag_lake, TEST_KEY, master), log) as env:
            wait_for(lambda: is_serialized(airflow_home, "privacy_orders"), 180, "the DAG processor to parse the DAGs")
            logical_date = f"{LOGICAL_DATE}T00:00:00+00:00"
            dag_run = trigger(env, "privacy_orders", logical_date)
            assert dag_run["data_interval_end"].startswith(LOGICAL_DATE)
            finished = ("success", "failed")
            wait_for(lambda: dag_run_state(airflow_home, "privacy_orders") in finished, 600, "the DAG run to finish")
            assert dag_run_state(airflow_home, "privacy_orders") == "success", log.read_text()[-3000:]
            current = (Path(dag_lake.root) / "clean" / "orders" / "CURRENT").read_text()
            # A backfill of the day before, under the real scheduler: judged, validated and
            # reported, its publish skipped (an older judgement), and the DAG run succeeds.
            older = trigger(env, "privacy_orders", "2026-11-28T00:00:00+00:00")
            wait_for(lambda: dag_run_state(airflow_home, "privacy_orders") in finished, 600, "the older run to finish")
    assert dag_run_state(airflow_home, "privacy_orders") == "success", log.read_text()[-3000:]
    assert task_states(airflow_home, older["dag_run_id"]) == {
        "enforce": "success",
        "validate": "success",
        "publish": "skipped",
        "report": "success",
    }
    assert (Path(dag_lake.root) / "clean" / "orders" / "CURRENT").read_text() == current
    # The tasks ran on the cluster: its worker started an executor for each Spark step.
    assert len(list(worker_dir.glob("app-*"))) == 6

    reports = {
        json.loads(p.read_text())["run_date"]: json.loads(p.read_text())
        for p in Path(dag_lake.root, "reports", "orders").glob("*.json")
    }
    assert sorted(reports) == ["2026-11-27", RUN_DATE.isoformat()]
    superseded = reports["2026-11-27"]
    assert superseded["published"] is False and superseded["superseded_by"] == current.strip()
    assert superseded["rows_in"] == len(expected_reasons(dag_lake.root, date(2026, 11, 27)))
    report = reports[RUN_DATE.isoformat()]
    assert report["run_date"] == RUN_DATE.isoformat()
    assert report["published"] is True
    expected = expected_reasons(dag_lake.root, RUN_DATE)
    got = {reason: sum(n.values()) for reason, n in report["counts"].items() if sum(n.values())}
    assert got == counts_by_reason(expected)

    state_of = {"kept": "consented", "anonymized": "anonymized"}
    want = {o: state_of[ACTIONS[r]] for o, r in expected.items() if ACTIONS[r] in state_of}
    published = read_rows(current_version_dir(dag_lake.root, "orders"))
    assert {r["order_id"]: r["record_state"] for r in published} == want

    # The task logs carry no personal data from the input.
    logs = "\n".join(p.read_text(errors="replace") for p in airflow_home.rglob("*.log")) + log.read_text()
    orders = read_rows(Path(dag_lake.root) / "raw" / "orders")  # every row, its raw id too
    assert personal_values_in(logs, orders, ("customer_id", "email", "full_name", "phone", "street_address")) == 0
    assert logs.count(TEST_KEY) == 0

    # The canaries reached the run (published pseudonymised, or quarantined) ...
    quarantined = read_rows(Path(report["quarantine_path"]))
    assert {"CANARY2", "CANARY3"} <= {r["order_id"] for r in quarantined}
    assert {"CANARY0", "CANARY1"} <= {r["order_id"] for r in published}
    # ... and appear in no log, report, Data Docs page, step state (the GE results) or
    # published file, nor anywhere in Airflow's metadata database (XComs included).
    assert Path(report["validation"]["data_docs"]).is_file()
    scanned = [p for p in airflow_home.rglob("*") if p.is_file() and p.suffix != ".db"]
    scanned += [p for p in worker_dir.rglob("*") if p.is_file() and p.name in ("stdout", "stderr")]
    for folder in ("reports", "staging", "clean", "tombstones", "ledger"):
        scanned += [p for p in Path(dag_lake.root, folder).rglob("*") if p.is_file()]
    leaks = {str(p): canaries_in(p.read_bytes().decode("utf-8", errors="replace")) for p in scanned}
    assert {path: found for path, found in leaks.items() if found} == {}
    assert len(scanned) > 20
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        dump = "\n".join(db.iterdump())
    assert "xcom" in dump and canaries_in(dump) == [] and TEST_KEY not in dump

    # The same job in local mode (this process's local[2] session) stages the same rows;
    # in full, or it would take every month from the cluster's version.
    keys = load_run_keys(needs_encryption=False, environ={"CONSENTGATE_HMAC_KEY": TEST_KEY})
    local = run_enforce(spark, load_policy(ORDERS_POLICY), dag_lake, RUN_DATE, "local-mode", keys, full=True)
    try:
        assert local.counts == report["counts"]
        assert sorted_rows(read_rows(Path(local.staging_path))) == sorted_rows(published)
    finally:
        shutil.rmtree(dag_lake.staging_run("orders", "local-mode"))
        shutil.rmtree(dag_lake.quarantine_run("orders", "local-mode"), ignore_errors=True)


def sorted_rows(rows: list[dict]) -> list[tuple]:
    return sorted(tuple(sorted((k, str(v)) for k, v in row.items())) for row in rows)


def test_dag_without_a_key_fails_and_publishes_nothing(dag_lake, airflow_home, tmp_path):
    before = (Path(dag_lake.root) / "clean" / "orders" / "CURRENT").read_text()
    reports_before = set(Path(dag_lake.root, "reports", "orders").glob("*.json"))
    env = airflow_env(airflow_home, dag_lake, key=None)
    log = tmp_path / "airflow.log"
    assert airflow(env, "dags", "test", "privacy_orders", "2026-11-30", log=log) != 0
    assert "no pseudonymisation key" in log.read_text()
    # The failure callback's summary, under the real task runner.
    assert "consentgate: enforce of orders failed in run manual__" in log.read_text()
    assert (Path(dag_lake.root) / "clean" / "orders" / "CURRENT").read_text() == before
    (new_report,) = set(Path(dag_lake.root, "reports", "orders").glob("*.json")) - reports_before
    report = json.loads(new_report.read_text())
    assert report["published"] is False and "no pseudonymisation key" in report["error"]
