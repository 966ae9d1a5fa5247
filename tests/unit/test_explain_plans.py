"""``explain`` is asked about one person: the id (and the pseudonyms it looks up) ride in
the query plans as data, not as literals, which plans print (the Spark UI, event logs)."""

from __future__ import annotations

from tests.conftest import ORDERS_POLICY
from transforms.explain import _as_data, _rows_where, _Subject
from transforms.policy import load_policy

ASKED = "C0424242"


def test_the_asked_id_finds_its_rows_without_appearing_in_the_plan(spark, tmp_path):
    policy = load_policy(ORDERS_POLICY)
    path = str(tmp_path / "source")
    spark.createDataFrame([(ASKED, 1), ("C0000001", 2), (f" {ASKED}\t", 3)], "customer_id string, n int").write.parquet(
        path
    )
    source = spark.read.parquet(path)
    subject = _Subject(spark, f"\u00a0{ASKED} ")
    mine = subject.rows_of(source, "customer_id", policy)
    assert sorted(row.n for row in mine.collect()) == [1, 3]
    assert subject.normalized(policy) == ASKED
    by_value = _rows_where(source, source["customer_id"], _as_data(spark, ASKED))
    assert [row.n for row in by_value.collect()] == [1]
    for found in (mine, by_value):
        assert ASKED not in found._jdf.queryExecution().toString()
