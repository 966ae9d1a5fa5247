"""Prints each task's state and elapsed time for the latest run of a DAG (metadata DB)."""

import sys

from airflow.models import DagRun, TaskInstance
from airflow.utils.session import create_session

dag_id = sys.argv[1]
with create_session() as session:
    run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
    if run is None:
        print(f"no run of {dag_id} recorded")
        sys.exit(0)
    print(f"DAG run {run.run_id}: {run.state}")
    instances = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
    for ti in sorted(instances, key=lambda t: t.start_date or run.start_date):
        elapsed = (ti.end_date - ti.start_date).total_seconds() if ti.start_date and ti.end_date else None
        print(
            f"  {ti.task_id:<10} {str(ti.state):<10} {elapsed:7.1f} s"
            if elapsed is not None
            else f"  {ti.task_id:<10} {ti.state}"
        )
