"""Helpers that read a lake the way an analyst or a privacy officer would: with pyarrow,
pandas and DuckDB (no Spark), plus the reference expectations for a generated lake."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.dataset as ds

from tests import reference
from transforms.lake import judgement_instant


@contextmanager
def generated_lake(spark, tmp_path_factory, name: str, run_date, **sizes) -> Iterator:
    """A generated lake of its own, with the test key set while it is in use."""
    import pytest

    from tests.conftest import TEST_KEY
    from transforms.generate import generate_lake
    from transforms.lake import Lake

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONSENTGATE_HMAC_KEY", TEST_KEY)
        lake = Lake.at(str(tmp_path_factory.mktemp(name)))
        generate_lake(spark, lake, run_date=run_date, **sizes)
        yield lake


def nothing_cached(spark) -> bool:
    """Whether the session's cache is empty: a run releases what it cached, since the
    process may carry on with other runs."""
    return spark._jsparkSession.sharedState().cacheManager().isEmpty()


def read_rows(path: str | Path) -> list[dict]:
    return ds.dataset(str(path), format="parquet").to_table().to_pylist()


def append_raw(spark, lake, folder: str, rows: list[tuple]) -> None:
    """Appends rows (tuples in the folder's column order) to ``raw/<folder>``; orders go
    to the folder of their month when the generator wrote them so, else to the one folder."""
    from transforms.generate import ORDERS_PARTITION, write_orders

    existing = spark.read.parquet(lake.path("raw", folder))
    if folder == "orders":
        orders = spark.createDataFrame(rows, existing.drop(ORDERS_PARTITION).schema)
        write_orders(orders, lake, "append", by_month=ORDERS_PARTITION in existing.columns)
        return
    spark.createDataFrame(rows, existing.schema).write.mode("append").parquet(lake.path("raw", folder))


def partitioned_rows(folder) -> list[tuple]:
    """Every row of a partitioned table with its partition column, in a stable order."""
    rows = ds.dataset(str(folder), format="parquet", partitioning="hive").to_table().to_pylist()
    return sorted(tuple(sorted((k, str(v)) for k, v in row.items())) for row in rows)


def table_folder(spark) -> Path:
    """The version folder the catalog table clean.orders reads now (above its month folders)."""
    folder = Path(urlparse(spark.table("clean.orders").inputFiles()[0]).path).parent
    return folder.parent if "=" in folder.name else folder


def current_version_dir(lake_root: str, dataset: str) -> Path:
    clean = Path(lake_root) / "clean" / dataset
    return clean / (clean / "CURRENT").read_text().strip()


def latest_report(lake_root: str, dataset: str) -> dict:
    reports = sorted((Path(lake_root) / "reports" / dataset).glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(reports[-1].read_text())


def expected_reasons(
    lake_root: str, run_date, retention_days: int = 730, purpose: str = "analytics", sale_or_sharing: bool = False
) -> dict:
    """order_id -> reason, from the raw files and the pure-Python reference model."""
    t = judgement_instant(run_date)
    raw = Path(lake_root) / "raw"
    events = [
        reference.Event(e["subject_id"], e["purpose"], e["status"], e["recorded_at"], e["expires_at"], e["source"])
        for e in read_rows(raw / "consent")
    ]
    erasures = [(e["subject_id"], e["requested_at"]) for e in read_rows(raw / "erasure_requests")]
    by_subject: dict = {}
    for event in events:
        by_subject.setdefault(reference.normalize(event.subject), []).append(event)
    expected = {}
    for order in read_rows(raw / "orders"):
        at = order["ordered_at"]
        if at is not None and at >= t:
            continue  # a later run's input
        subject = reference.normalize(order["customer_id"])
        expected[order["order_id"]] = reference.reason_for(
            order["customer_id"],
            at,
            t,
            by_subject.get(subject, []),
            erasures,
            purpose,
            retention_days,
            sale_or_sharing=sale_or_sharing,
        )
    return expected


def counts_by_reason(expected: dict) -> dict:
    return dict(Counter(expected.values()))


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def personal_values_in(text: str, rows: list[dict], columns: tuple[str, ...]) -> int:
    """How many of the rows' personal values appear in ``text``: a count, so that a
    failing test prints no value (nor the text) itself. Blank and very short values
    (which any text may hold by chance) are not looked for."""
    values = {str(row[column]).strip() for row in rows for column in columns if row[column] is not None}
    return sum(1 for value in values if len(value) >= 5 and value in text)


def pseudonym(subject: str) -> str:
    """The test key's pseudonym of a (normalised) subject key, computed with Python's hmac."""
    import hashlib
    import hmac

    from tests.conftest import TEST_KEY

    return hmac.new(TEST_KEY.encode(), subject.encode(), hashlib.sha256).hexdigest()
