"""Data minimisation at run time: what the source must look like for a policy to run."""

from __future__ import annotations

import pytest
from pyspark.sql.types import ArrayType, DateType, IntegerType, StringType, StructField, StructType, TimestampType

from transforms.enforce import check_source_schema
from transforms.errors import SchemaError
from transforms.policy import parse_policy

SOURCE = StructType(
    [
        StructField("id", StringType()),
        StructField("seen", TimestampType()),
        StructField("note", StringType()),
        StructField("visits", IntegerType()),
        StructField("address", StructType([StructField("zip", StringType()), StructField("city", StringType())])),
        StructField("tags", ArrayType(StringType())),
        StructField("born", DateType()),
    ]
)


def policy(columns: dict):
    return parse_policy(
        {
            "dataset": "people",
            "source": "raw/people",
            "subject_key": "id",
            "event_time": "seen",
            "purpose": "analytics",
            "columns": {"id": {"consented": "pseudonymize", "anonymized": "drop"}, **columns},
        },
        "people.yml",
    )


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"address.zip": "keep"}, "'address.zip' is inside the nested column 'address': declare 'address' whole"),
        ({"missing": "keep"}, "declared column 'missing' is missing"),
        ({"address": {"consented": "pseudonymize", "anonymized": "drop"}}, "'address' is struct<.*pseudonymize"),
        ({"tags": "redact"}, "column 'tags' is array<string>; rule 'redact'"),
        ({"visits": "scrub_text"}, "column 'visits' is int; rule 'scrub_text'"),
        ({"seen": {"consented": "keep", "anonymized": "keep"}}, "'seen' is timestamp: anonymised rows may not carry"),
        # Generalisations that change no value of the type: the exact value, in other words.
        ({"born": {"anonymized": "generalize:day"}}, "'born' is date: rule 'generalize:day' .anonymized. leaves every"),
        ({"visits": {"anonymized": "generalize:bucket1"}}, "'visits' is int: rule 'generalize:bucket1' .anonymized."),
    ],
)
def test_the_run_stops_naming_the_column(columns, message):
    with pytest.raises(SchemaError, match=message):
        check_source_schema(SOURCE, policy(columns), "lake/raw/people")


def test_nested_columns_declared_whole_and_undeclared_columns_are_fine():
    check_source_schema(
        SOURCE,
        policy(
            {
                "address": "drop",
                "tags": {"consented": "keep", "anonymized": "drop"},
                "note": "scrub_text",
                # A day of a timestamp, buckets of two: coarser than the value.
                "seen": {"consented": "keep", "anonymized": "generalize:day"},
                "visits": {"anonymized": "generalize:bucket2"},
            }
        ),
        "lake/raw/people",
    )
