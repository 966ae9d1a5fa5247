"""One consent-enforcement DAG per policy file in dags/policies/ (privacy_<dataset>).

The lake is $CONSENTGATE_LAKE, by default the repository's ./lake folder.
"""

import os
from pathlib import Path

from transforms.airflow_dag import build_dag
from transforms.policy import find_policies

_HERE = Path(__file__).resolve().parent
_LAKE = os.environ.get("CONSENTGATE_LAKE", str(_HERE.parent / "lake"))

_built: dict[str, Path] = {}
for _policy_path in find_policies(_HERE / "policies"):
    _dag = build_dag(_policy_path, _LAKE)
    if _dag.dag_id in _built:
        # One DAG silently replacing another would stop a policy from ever running.
        raise ValueError(f"{_policy_path}: DAG id {_dag.dag_id} is also that of {_built[_dag.dag_id]}")
    _built[_dag.dag_id] = _policy_path
    globals()[_dag.dag_id] = _dag
