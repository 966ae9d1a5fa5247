"""State a run's steps leave for each other under ``staging/<dataset>/<run_id>/``:
``enforce.json``, ``validate.json``, ``publish.json``. Paths and counts only, never data."""

from __future__ import annotations

from transforms.errors import StepStateError
from transforms.lake import Lake
from transforms.storage import read_json, write_json


def load_step(lake: Lake, dataset: str, run_id: str, step: str, required: bool = True) -> dict | None:
    path = lake.step_state(dataset, run_id, step)
    state = read_json(path)
    if state is None and required:
        raise StepStateError(f"{path}: missing; run the {step} step for run {run_id} first")
    return state


def save_step(lake: Lake, dataset: str, run_id: str, step: str, state: dict) -> None:
    write_json(lake.step_state(dataset, run_id, step), state)


def record_failure(lake: Lake, dataset: str, run_id: str, step: str, message: str) -> None:
    """Leaves the one-line reason where the DAG's task and the report find it."""
    save_step(lake, dataset, run_id, step, {"ok": False, "error": message})
