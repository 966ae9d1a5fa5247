"""Two datasets judged against one consent log, each for its own purpose: a customer
has one pseudonym in both, and each dataset follows its own purpose's consent."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date
from pathlib import Path

import pytest

from tests import reference
from tests.conftest import REPO, TEST_KEY
from tests.lakecheck import current_version_dir, read_rows
from transforms.cli import main
from transforms.generate import generate_lake
from transforms.lake import Lake, judgement_instant

pytestmark = pytest.mark.integration
RUN_DATE = date(2026, 11, 28)


def test_one_pseudonym_per_customer_across_datasets_and_purposes(spark, tmp_path, hmac_key):
    lake = Lake.at(str(tmp_path / "lake"))
    generate_lake(spark, lake, customers=300, orders=2000, seed=31, run_date=RUN_DATE)
    for name in ("orders", "customers"):
        policy = REPO / "dags" / "policies" / f"{name}.yml"
        args = ["run", "--policy", str(policy), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", "r1"]
        assert main(args) == 0

    t = judgement_instant(RUN_DATE)
    events = [
        reference.Event(e["subject_id"], e["purpose"], e["status"], e["recorded_at"], e["expires_at"], e["source"])
        for e in read_rows(Path(lake.root) / "raw" / "consent")
    ]
    customers = {r["customer_id"] for r in read_rows(Path(lake.root) / "raw" / "customers")}

    def consented_for(purpose: str) -> set[str]:
        return {
            c
            for c in customers
            if reference.consent_reason(reference.deciding_event(events, c, purpose, t), t) == "consented"
        }

    def pseudonym(subject: str) -> str:
        return hmac.new(TEST_KEY.encode(), subject.encode(), hashlib.sha256).hexdigest()

    marketing = {r["customer_id"] for r in read_rows(current_version_dir(lake.root, "customers"))} - {None}
    assert marketing == {pseudonym(c) for c in consented_for("marketing")}
    analytics = {r["customer_id"] for r in read_rows(current_version_dir(lake.root, "orders"))} - {None}
    assert analytics <= {pseudonym(c) for c in consented_for("analytics")}
    # The same customers carry the same pseudonyms in both tables.
    both = marketing & analytics
    assert both <= {pseudonym(c) for c in consented_for("marketing") & consented_for("analytics")}
    assert len(both) > 10
