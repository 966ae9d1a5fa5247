"""What the DAGs tell Airflow's users: column lineage on the published Asset, the
policy in the DAG's docs, and a failure summary that names the reason and no data."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from tests.conftest import ORDERS_POLICY, TEST_KEY
from transforms.airflow_dag import FailureSummary, build_dag
from transforms.lake import Lake
from transforms.lineage import column_lineage, masked_columns
from transforms.policy import load_policy
from transforms.steps import load_step
from transforms.storage import write_json


def test_lineage_marks_every_published_column_and_which_are_masked():
    policy = load_policy(ORDERS_POLICY)
    facet = column_lineage(policy, "/lake")["columnLineage"]
    fields = facet["fields"]
    assert list(fields) == [c.name for c in policy.output_columns] + ["record_state", "ordered_at_month"]
    [partition] = fields["ordered_at_month"]["inputFields"]
    assert (partition["field"], partition["transformations"][0]["masking"]) == ("ordered_at", True)
    [email] = fields["email"]["inputFields"]
    assert email == {
        "namespace": "/lake",
        "name": "raw/orders",
        "field": "email",
        "transformations": [
            {
                "type": "DIRECT",
                "subtype": "TRANSFORMATION",
                "description": "consented rows: pseudonymised (keyed HMAC-SHA256); anonymised rows: not published",
                "masking": True,
            }
        ],
    }
    assert fields["channel"]["inputFields"][0]["transformations"][0]["subtype"] == "IDENTITY"
    assert {f["field"] for f in fields["record_state"]["inputFields"]} >= {"customer_id", "status", "expires_at"}
    # zip_code and ordered_at are published exactly in consented rows: not masked.
    assert masked_columns(policy) == ["customer_id", "email", "phone", "birth_date"]


def test_the_dag_documents_the_policy_and_publishes_an_asset_with_its_lineage(tmp_path):
    dag = build_dag(ORDERS_POLICY, str(tmp_path))
    assert "| `zip_code` | address | kept as it is | generalised to its first 3 characters | Sales by" in dag.doc_md
    [asset] = dag.get_task("publish").outlets
    assert asset.name == "clean.orders" and asset.extra["masked_columns"][:2] == ["customer_id", "email"]
    assert "columnLineage" in asset.extra["facets"]
    assert isinstance(dag.get_task("enforce").on_failure_callback[0], FailureSummary)


def test_the_failure_summary_names_the_step_run_and_recorded_reason(tmp_path, caplog):
    lake = Lake.at(str(tmp_path))
    run_id = "manual__2026-11-29T000000Z"
    write_json(lake.step_state("orders", run_id, "validate"), {"error": "validation failed: x(consented.email)"})
    context = {"ti": SimpleNamespace(task_id="validate"), "run_id": "manual__2026-11-29T00:00:00+00:00"}
    with caplog.at_level(logging.ERROR, logger="consentgate.airflow"):
        FailureSummary(lake.root, "orders")(context)
        FailureSummary(lake.root, "orders")({**context, "ti": SimpleNamespace(task_id="report")})
    assert caplog.messages == [
        f"consentgate: validate of orders failed in run {run_id}: validation failed: x(consented.email)",
        f"consentgate: report of orders failed in run {run_id}: see the task log",
    ]


def test_a_backfilled_run_older_than_the_current_version_skips_publish_and_succeeds(tmp_path, monkeypatch):
    import pytest
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    import transforms.report
    from transforms.airflow_dag import write_report_task

    lake = Lake.at(str(tmp_path))
    run_id = "backfill__2026-11-02T000000Z"
    publish = build_dag(ORDERS_POLICY, lake.root).get_task("publish")
    publish.consentgate_run_id = run_id  # as rendered from the template

    def spark_submit_fails(self, context):
        # What the publish job leaves when it refuses an older judgement (exit 2).
        write_json(
            lake.step_state("orders", run_id, "publish"),
            {"ok": False, "error": "an older judgement is not published", "superseded_by": "scheduled__v9"},
        )
        raise RuntimeError("spark-submit exited with 2")

    monkeypatch.setattr(SparkSubmitOperator, "execute", spark_submit_fails)
    with pytest.raises(AirflowSkipException, match="an older judgement is not published"):
        publish.execute({})

    reports = {"superseded": {"published": False, "superseded_by": "scheduled__v9"}, "failed": {"published": False}}
    for outcome, report in reports.items():
        monkeypatch.setattr(transforms.report, "write_report", lambda *args, report=report: ("r.json", report))
        if outcome == "superseded":
            assert write_report_task(lake.root, "orders", run_id) == "r.json"
        else:
            with pytest.raises(AirflowFailException):
                write_report_task(lake.root, "orders", run_id)


@pytest.mark.parametrize(
    ("master", "key_in_environment"),
    [({"conn_type": "spark", "host": "local[2]"}, True), ({"conn_type": "spark", "host": "yarn"}, False)],
)
def test_a_key_from_its_connection_reaches_spark_submit_only_through_its_environment(
    tmp_path, monkeypatch, master, key_in_environment
):
    """Locally the provider hands env_vars to the spark-submit process; on YARN (and
    Kubernetes) it turns them into --conf values of the command line it logs, so there the
    key is left to the cluster's secret mechanism."""
    monkeypatch.delenv("CONSENTGATE_HMAC_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(master))
    monkeypatch.setenv("AIRFLOW_CONN_CONSENTGATE_HMAC", json.dumps({"conn_type": "generic", "password": TEST_KEY}))
    task = build_dag(ORDERS_POLICY, str(tmp_path)).get_task("enforce")
    task.consentgate_run_id = "manual__2026-11-29T000000Z"
    task._prepare_keys()
    hook = task._get_hook()
    command = " ".join(hook._build_spark_submit_command(task.application))
    assert TEST_KEY not in command
    assert (hook._env or {}).get("CONSENTGATE_HMAC_KEY") == (TEST_KEY if key_in_environment else None)
    assert "CONSENTGATE_HMAC_KEY" not in command


def test_without_a_key_the_task_fails_before_spark_submit_with_the_jobs_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("CONSENTGATE_HMAC_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_CONSENTGATE_HMAC", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    task = build_dag(ORDERS_POLICY, str(tmp_path)).get_task("validate")
    task.consentgate_run_id = "manual__2026-11-29T000000Z"
    with pytest.raises(Exception, match="^consentgate validate failed: .*CONSENTGATE_HMAC_KEY") as failure:
        task._prepare_keys()
    assert type(failure.value).__name__ == "AirflowException"
    recorded = load_step(Lake.at(str(tmp_path)), "orders", "manual__2026-11-29T000000Z", "validate")
    assert recorded["error"] == str(failure.value).removeprefix("consentgate validate failed: ")


@pytest.mark.parametrize(
    ("environment", "policy_text", "reason"),
    [
        ({"CONSENTGATE_HMAC_PREVIOUS_KEYS": "not json"}, None, "CONSENTGATE_HMAC_PREVIOUS_KEYS"),
        # A policy that encrypts needs its key before spark-submit starts, like the HMAC key.
        ({}, "{consented: encrypt, anonymized: drop, category: contact}", "CONSENTGATE_ENCRYPTION_KEY"),
    ],
)
def test_a_bad_retired_or_missing_encryption_key_fails_the_task_before_spark_submit(
    tmp_path, monkeypatch, environment, policy_text, reason
):
    monkeypatch.setenv("CONSENTGATE_HMAC_KEY", TEST_KEY)
    monkeypatch.delenv("CONSENTGATE_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_CONSENTGATE_ENCRYPTION", raising=False)
    monkeypatch.delenv("CONSENTGATE_HMAC_PREVIOUS_KEYS", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    policy = ORDERS_POLICY
    if policy_text:
        policy = tmp_path / "orders.yml"
        text = ORDERS_POLICY.read_text()
        policy.write_text(
            text.replace("{consented: pseudonymize, anonymized: drop, category: contact}", policy_text, 1)
        )
    task = build_dag(policy, str(tmp_path / "lake")).get_task("enforce")
    task.consentgate_run_id = "manual__2026-11-29T000000Z"
    with pytest.raises(Exception, match=f"^consentgate enforce failed: .*{reason}") as failure:
        task._prepare_keys()
    assert type(failure.value).__name__ == "AirflowException"


@pytest.mark.parametrize(
    ("interval_end", "run_after", "run_date"),
    [
        ("2026-11-29T00:00:00+00:00", "2026-12-01T03:20:00+00:00", "2026-11-28"),  # scheduled, backfilled, cleared
        (None, "2026-12-01T03:20:00+00:00", "2026-11-30"),  # `airflow dags trigger` with no logical date
    ],
)
def test_each_step_is_given_the_day_before_its_data_interval_ends_or_before_it_was_triggered(
    tmp_path, interval_end, run_after, run_date
):
    from datetime import datetime

    from airflow.sdk.execution_time.task_runner import MacrosAccessor

    dag = build_dag(ORDERS_POLICY, str(tmp_path))
    task = dag.get_task("enforce")
    context = {
        "macros": MacrosAccessor(),
        "params": {"full": True},
        "run_id": "manual__2026-12-01T03:20:00+00:00",
        "dag_run": SimpleNamespace(run_after=datetime.fromisoformat(run_after)),
    }
    if interval_end is not None:  # Airflow leaves the key out when a run has no logical date
        context["data_interval_end"] = datetime.fromisoformat(interval_end)
    task.render_template_fields(context, dag.get_template_env())
    args = task.application_args
    assert args[args.index("--run-date") + 1] == run_date
    assert args[-1] == "--full=true" and task.consentgate_run_id == "manual__2026-12-01T032000Z"


def test_the_spark_steps_take_the_pool_named_for_a_remote_lake(tmp_path, monkeypatch):
    monkeypatch.delenv("CONSENTGATE_POOL", raising=False)
    assert {t.pool for t in build_dag(ORDERS_POLICY, str(tmp_path)).tasks} == {"default_pool"}
    monkeypatch.setenv("CONSENTGATE_POOL", "consentgate_orders")
    dag = build_dag(ORDERS_POLICY, "s3a://bucket/lake")
    assert {t.task_id: t.pool for t in dag.tasks} == {
        "enforce": "consentgate_orders",
        "validate": "consentgate_orders",
        "publish": "consentgate_orders",
        "report": "default_pool",
    }
    monkeypatch.setenv("CONSENTGATE_POOL", "consentgate_{dataset}")
    assert build_dag(ORDERS_POLICY, "s3a://bucket/lake").get_task("publish").pool == "consentgate_orders"


def test_validate_needs_only_the_key_it_uses(tmp_path, monkeypatch):
    """validate recomputes pseudonyms: a policy that encrypts does not make it need the
    encryption key, nor do malformed retired keys stop it."""
    monkeypatch.setenv("CONSENTGATE_HMAC_KEY", TEST_KEY)
    monkeypatch.delenv("CONSENTGATE_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_CONSENTGATE_ENCRYPTION", raising=False)
    monkeypatch.setenv("CONSENTGATE_HMAC_PREVIOUS_KEYS", "not json")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    policy = tmp_path / "orders.yml"
    text = ORDERS_POLICY.read_text()
    encrypting = "{consented: encrypt, anonymized: drop, category: contact}"
    policy.write_text(text.replace("{consented: pseudonymize, anonymized: drop, category: contact}", encrypting, 1))
    dag = build_dag(policy, str(tmp_path / "lake"))
    validate, enforce = dag.get_task("validate"), dag.get_task("enforce")
    for task in (validate, enforce):
        task.consentgate_run_id = "manual__2026-11-29T000000Z"
    validate._prepare_keys()  # no exception
    with pytest.raises(Exception, match="^consentgate enforce failed: "):
        enforce._prepare_keys()
