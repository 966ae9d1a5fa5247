"""Every DAG file imports cleanly, without Spark and without touching a connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_every_dag_file_imports_without_errors():
    bag = _dagbag()
    assert bag.import_errors == {}
    assert "privacy_orders" in bag.dag_ids


def test_privacy_dag_runs_enforce_validate_publish_report_on_spark_default():
    dag = _dagbag().dags["privacy_orders"]
    assert [t.task_id for t in dag.topological_sort()] == ["enforce", "validate", "publish", "report"]
    for task_id in ("enforce", "validate", "publish"):
        task = dag.get_task(task_id)
        assert type(task).__name__ == "ConsentgateSparkSubmitOperator"
        assert task._conn_id == "spark_default"
        assert task.application_args[0] == task_id
        assert "CONSENTGATE_HMAC_KEY" not in " ".join(task.application_args)
    assert dag.get_task("validate").upstream_task_ids == {"enforce"}
    assert dag.get_task("report").trigger_rule == "all_done"
    assert [a.name for a in dag.get_task("publish").outlets] == ["clean.orders"]
    assert dag.max_active_runs == 1


def test_every_share_policy_gets_a_dag_that_exports_to_its_recipient():
    dag = _dagbag().dags["share_orders_to_acme_ads"]
    assert [t.task_id for t in dag.topological_sort()] == ["enforce", "validate", "publish", "report"]
    assert dag.get_task("enforce").application_args[:3] == [
        "enforce",
        "--policy",
        str(REPO / "dags" / "policies" / "orders_to_acme_ads.yml"),
    ]
    assert [a.name for a in dag.get_task("publish").outlets] == ["export.orders.acme_ads"]
    assert "share" in dag.tags and "share:acme_ads" in dag.tags and dag.max_active_runs == 1
    assert "acme_ads" in dag.doc_md and "reports/disclosures.jsonl" in dag.doc_md


def test_parsing_the_dags_imports_neither_pyspark_nor_great_expectations():
    probe = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); import json; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'great_expectations'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "dags" / "privacy_dags.py")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
