"""State a run's steps leave for each other under ``staging/<dataset>/<run_id>/``:
``enforce.json``, ``validate.json``, ``publish.json``. Paths and counts only, never data."""

from __future__ import annotations

from transforms.errors import StepStateError
from transforms.lake import Lake
from transforms.storage import delete, read_json, write_json

STEPS = ("enforce", "validate", "publish")
# What a publish has done so far (its version, disclosure, whether the table points at
# it), kept across its retries so a retry finishes it; a new enforce forgets it.
PUBLISHING = "publishing"


def load_step(lake: Lake, dataset: str, run_id: str, step: str, required: bool = True) -> dict | None:
    path = lake.step_state(dataset, run_id, step)
    state = read_json(path)
    if state is None and required:
        raise StepStateError(f"{path}: missing; run the {step} step for run {run_id} first")
    return state


def save_step(lake: Lake, dataset: str, run_id: str, step: str, state: dict) -> None:
    write_json(lake.step_state(dataset, run_id, step), state)


def start_step(lake: Lake, dataset: str, run_id: str, step: str) -> None:
    """Forgets what this step and the later ones left in an earlier attempt of the run,
    so a retried or cleared run never reports a stale result as its own."""
    for later in STEPS[STEPS.index(step) :]:
        delete(lake.step_state(dataset, run_id, later))
    if step == "enforce":  # a new output: whatever an earlier one's publish did is moot
        delete(lake.step_state(dataset, run_id, PUBLISHING))


def record_failure(lake: Lake, dataset: str, run_id: str, step: str, message: str, **fields) -> None:
    """Leaves the one-line reason (and what else the error says, e.g. ``superseded_by``)
    where the DAG's task and the report find it."""
    save_step(lake, dataset, run_id, step, {"ok": False, "error": message, **fields})
