"""Builds the Airflow DAG of one policy: ``privacy_<dataset>``,
``enforce -> validate -> publish -> report``.

Each Spark step is a SparkSubmitOperator on the ``spark_default`` connection that runs
``transforms/spark_entry.py`` (the ``consentgate`` command line). Tasks pass nothing but
the run's coordinates: every step reads and writes paths keyed by the run id under the
lake, and judges time from the run date, never from the clock.

Only cheap imports here: DAG files are parsed often, and Spark is only needed inside
the tasks' own processes.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, TriggerRule

from transforms import spark_entry
from transforms.java_options import driver_java_options, executor_java_options
from transforms.keys import KEY_CONNECTIONS
from transforms.lake import Lake
from transforms.lineage import column_lineage, masked_columns
from transforms.policy import Policy, load_policy
from transforms.spark_settings import NO_JOB_RECORDS, job_spark_conf

# The run date is the day whose end (t) closes the data interval: clearing and rerunning
# a DAG run judges at the same instant. A run triggered without a logical date has no
# data interval: it judges at the last midnight before it was triggered, as the daily
# timetable's latest complete interval would.
RUN_DATE = (
    "{{ macros.ds_add((data_interval_end if data_interval_end is defined and data_interval_end"
    " else dag_run.run_after) | ds, -1) }}"
)
RUN_ID = "{{ run_id | consentgate_run_id }}"
# Trigger with {"full": true} to judge every period again instead of reusing the current version's.
FULL = "--full={{ params.full | lower }}"


def consentgate_run_id(airflow_run_id: str) -> str:
    """Airflow's run id as a folder name: ``manual__2026-11-28T00:00:00+00:00`` -> ``manual__2026-11-28T000000Z``."""
    text = airflow_run_id.replace("+00:00", "Z")
    return re.sub(r"[^A-Za-z0-9_.=-]", "", text)[:200]


def asset_for(policy: Policy, lake: Lake) -> Asset:
    """The published table, for analysts' DAGs to be scheduled on: ``Asset("clean.<dataset>")``.

    Named after the catalog table, not the lake folder, so that pointing the DAGs at
    another lake does not leave two assets claiming one name. Its ``extra`` carries the
    OpenLineage-style column lineage (which columns are masked).
    """
    extra = {"facets": column_lineage(policy, lake.root), "masked_columns": masked_columns(policy)}
    if policy.is_share:
        return Asset(name=f"export.{policy.shared_dataset}.{policy.recipient}", extra=extra)
    return Asset(name=f"clean.{policy.dataset}", extra=extra)


class FailureSummary:
    """A task's ``on_failure_callback``: one log line naming the task, the run and the
    reason its step recorded (step errors name files, columns and keys, never data)."""

    def __init__(self, lake_root: str, dataset: str):
        self.lake_root = lake_root
        self.dataset = dataset

    def __call__(self, context) -> None:
        import logging

        from transforms.steps import STEPS, load_step

        task_id = context["ti"].task_id
        run_id = consentgate_run_id(str(context["run_id"]))
        state = None
        if task_id in STEPS:
            state = load_step(Lake.at(self.lake_root), self.dataset, run_id, task_id, required=False)
        reason = (state or {}).get("error") or "see the task log"
        logging.getLogger("consentgate.airflow").error(
            "consentgate: %s of %s failed in run %s: %s", task_id, self.dataset, run_id, reason
        )


class ConsentgateSparkSubmitOperator(SparkSubmitOperator):
    """A consentgate step under spark-submit, whose failure names the reason the step recorded."""

    template_fields = (*SparkSubmitOperator.template_fields, "consentgate_run_id")

    def __init__(
        self,
        *,
        step: str,
        lake_root: str,
        dataset: str,
        consentgate_run_id: str,
        needs_encryption_key: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.step = step
        self.lake_root = lake_root
        self.dataset = dataset
        self.consentgate_run_id = consentgate_run_id
        self.needs_encryption_key = needs_encryption_key

    def _env_goes_on_the_command_line(self) -> bool:
        """On YARN and Kubernetes the provider turns ``env_vars`` into ``--conf`` values of a
        command line that it logs (masking only names with "secret" or "password"): a key
        must not go that way, so there it comes from the cluster's secret mechanism."""
        probe = self._get_hook()  # the provider's own reading of the master; execute builds its own
        return bool(probe._is_yarn or probe._is_kubernetes)

    def _keys_from_connections(self) -> None:
        from airflow.sdk import BaseHook

        for variable, connection_id in KEY_CONNECTIONS.items():
            if os.environ.get(variable):
                continue
            try:
                secret = BaseHook.get_connection(connection_id).password
            except Exception:  # no connection: the job itself stops with exit 2 if it needs the key
                continue
            if secret:
                # Through the environment of spark-submit, never its command line.
                self.env_vars = {**(self.env_vars or {}), variable: secret}

    def _require_keys(self) -> None:
        """Stops here, with the job's own one-line reason, when a key the step needs is
        missing, weak or malformed (the HMAC key; for enforce also the retired ones and the
        encryption key if the policy encrypts): spark-submit would start a JVM only for the
        job to stop at once."""
        from airflow.sdk.exceptions import AirflowException

        from transforms.errors import ConsentgateError
        from transforms.keys import load_hmac_key, load_run_keys
        from transforms.steps import record_failure

        environ = {**os.environ, **(self.env_vars or {})}
        try:
            if self.step == "enforce":
                load_run_keys(self.needs_encryption_key, environ)
            else:  # validate recomputes pseudonyms only
                load_hmac_key(environ)
        except ConsentgateError as err:
            record_failure(Lake.at(self.lake_root), self.dataset, self.consentgate_run_id, self.step, str(err))
            raise AirflowException(f"consentgate {self.step} failed: {err}") from None

    def _prepare_keys(self) -> None:
        if self.step in ("enforce", "validate") and not self._env_goes_on_the_command_line():
            # (On YARN and Kubernetes the job itself stops with exit 2 when the cluster gave no key.)
            self._keys_from_connections()
            self._require_keys()

    def execute(self, context):
        from transforms.steps import start_step

        # An earlier try's state must not be reported as this try's reason.
        start_step(Lake.at(self.lake_root), self.dataset, self.consentgate_run_id, self.step)
        self._prepare_keys()
        try:
            return super().execute(context)
        except Exception as err:
            from airflow.sdk.exceptions import AirflowException

            from transforms.steps import load_step

            state = load_step(Lake.at(self.lake_root), self.dataset, self.consentgate_run_id, self.step, required=False)
            if state and state.get("superseded_by"):
                from airflow.sdk.exceptions import AirflowSkipException

                # A backfill of a date older than the current version: not an error.
                raise AirflowSkipException(f"consentgate {self.step}: {state['error']}") from err
            if state and state.get("error"):
                raise AirflowException(f"consentgate {self.step} failed: {state['error']}") from err
            raise


def write_report_task(lake_root: str, dataset: str, run_id: str) -> str:
    """Writes the run report whatever happened upstream; fails the run if nothing was
    published, unless a newer judgement is current (a backfilled or cleared old run)."""
    from airflow.sdk.exceptions import AirflowFailException

    from transforms.report import write_report

    path, report = write_report(Lake.at(lake_root), dataset, run_id)
    if report.get("superseded_by"):
        return path  # judged and validated; a newer version stays current
    if not report["published"]:
        reason = report.get("error") or "; ".join(report.get("validation", {}).get("failed", [])) or "see the report"
        raise AirflowFailException(f"{dataset}: nothing published ({reason}); report at {path}")
    return path  # a path through XCom, never data


def _doc_summary(policy: Policy) -> str:
    settings = (
        f"purpose `{policy.purpose}`, retention {policy.retention_days or 'unlimited'} days, consent checked at "
        f"`{policy.check_consent_at.value}`"
    )
    if policy.is_share:
        return (
            f"Shares `{policy.shared_dataset}` with the third party **{policy.recipient}** under `{policy.path}` "
            f"({settings}): only rows of customers with valid consent to `{policy.purpose}`, pseudonymised with "
            f"{policy.recipient}'s own key, are validated and exported to `exports/{policy.recipient}/"
            f"{policy.shared_dataset}/`, and every export is recorded in `reports/disclosures.jsonl`. "
            f"Policy SHA-256 `{policy.sha256[:16]}…`."
        )
    return (
        f"Enforces `{policy.path}` ({settings}, without consent: {policy.on_no_consent.value}), validates the "
        f"result and publishes `clean.{policy.dataset}`. Policy SHA-256 `{policy.sha256[:16]}…`."
    )


def doc_for(policy: Policy) -> str:
    lines = [
        f"# {policy.dag_id}",
        policy.description or "",
        "",
        _doc_summary(policy),
        "",
        "| column | category | consented rows | anonymised rows | note |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| `{c.name}` | {c.category or ''} | {c.consented.description} | {c.anonymized.description} "
            f"| {c.note.replace('|', '/')} |"
            for c in policy.columns
        ),
        "",
        "Run reports: `reports/" + policy.dataset + "/<run id>.html` under the lake; every dataset's latest run: "
        "`reports/index.html`.",
    ]
    return "\n".join(lines)


def spark_conf(lake: Lake, python: str) -> dict[str, str]:
    conf = {
        **job_spark_conf(),
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.ui.showConsoleProgress": "false",
        **NO_JOB_RECORDS,
    }
    conf["spark.driver.extraJavaOptions"] = driver_java_options(lake.catalog if lake.is_local else None)
    conf["spark.executor.extraJavaOptions"] = executor_java_options(conf.get("spark.executor.extraJavaOptions"))
    return conf


def build_dag(policy_path: str | Path, lake_root: str, start_date: datetime | None = None) -> DAG:
    policy = load_policy(policy_path)
    lake = Lake.at(lake_root)
    python = os.environ.get("CONSENTGATE_PYSPARK_PYTHON", sys.executable)
    # A remote lake has no lock of its own (transforms/dataset_lock.py): a pool of one slot
    # keeps the steps of a backfill's runs and the scheduled ones from overlapping;
    # `{dataset}` in the name gives each dataset a pool of its own.
    named = os.environ.get("CONSENTGATE_POOL")
    pool = {"pool": named.replace("{dataset}", policy.dataset)} if named else {}
    common_args = ["--policy", str(Path(policy_path).resolve()), "--lake", lake.root, "--run-id", RUN_ID]
    dag = DAG(
        dag_id=policy.dag_id,
        description=(
            f"Consented export of {policy.shared_dataset} to {policy.recipient}"
            if policy.is_share
            else f"Consent enforcement for {policy.dataset} ({policy.purpose})"
        ),
        doc_md=doc_for(policy),
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=start_date or datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["consentgate", "share" if policy.is_share else "privacy", policy.purpose],
        default_args={
            "owner": "data-engineering",
            "retries": 0,
            "retry_delay": timedelta(minutes=5),
            "on_failure_callback": FailureSummary(lake.root, policy.dataset),
        },
        user_defined_filters={"consentgate_run_id": consentgate_run_id},
        params={
            "full": Param(
                False,
                type="boolean",
                description="Judge every period again, even where the current version's could be reused.",
            )
        },
    )
    with dag:
        steps = []
        for step in ("enforce", "validate", "publish"):
            run_date_args = ["--run-date", RUN_DATE, *([FULL] if step == "enforce" else [])]
            steps.append(
                ConsentgateSparkSubmitOperator(
                    task_id=step,
                    step=step,
                    lake_root=lake.root,
                    dataset=policy.dataset,
                    consentgate_run_id=RUN_ID,
                    needs_encryption_key=policy.needs_encryption_key,
                    application=spark_entry.__file__,
                    application_args=[step, *common_args, *run_date_args],
                    conn_id="spark_default",
                    name=f"consentgate-{step}-{policy.dataset}",
                    conf=spark_conf(lake, python),
                    driver_memory=os.environ.get("CONSENTGATE_DRIVER_MEMORY", "2g"),
                    env_vars={"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python},
                    outlets=[asset_for(policy, lake)] if step == "publish" else [],
                    **pool,
                )
            )
        report = PythonOperator(
            task_id="report",
            python_callable=write_report_task,
            op_kwargs={"lake_root": lake.root, "dataset": policy.dataset, "run_id": RUN_ID},
            trigger_rule=TriggerRule.ALL_DONE,
        )
        steps[0] >> steps[1] >> steps[2] >> report
    return dag
