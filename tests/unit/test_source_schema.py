"""Data minimisation at run time: what the source must look like for a policy to run."""

from __future__ import annotations

import re

import pytest
from pyspark.sql.types import (
    ArrayType,
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

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
        StructField("delivery", StructType([StructField("street", StringType()), StructField("at", TimestampType())])),
        StructField("utm.source", StringType()),
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
        # A time inside a nested column is as exact as one on its own.
        ({"delivery": "keep"}, "'delivery' is struct<street:string,at:timestamp>: anonymised rows may not carry"),
        # Spark would read it as the field `source` of a column `utm`.
        ({"utm.source": "keep"}, "column 'utm.source': a name with a dot or a backtick is not supported; rename it"),
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


@pytest.mark.parametrize("key_type", [DoubleType(), DecimalType(12, 2), DateType()])
def test_a_subject_key_whose_text_is_not_the_id_stops_the_run(key_type):
    """A float id reads "1.2345678E7" as text, which matches no consent event: every row
    would be judged without consent and nothing would say why."""
    source = StructType([StructField("id", key_type), StructField("seen", TimestampType())])
    with pytest.raises(
        SchemaError, match=re.escape(f"subject key 'id' is {key_type.simpleString()}; it must be one of")
    ):
        check_source_schema(source, policy({}), "lake/raw/people")


@pytest.mark.parametrize("key_type", [StringType(), LongType(), IntegerType(), DecimalType(38, 0)])
def test_a_subject_key_of_text_or_whole_numbers_is_fine(key_type):
    source = StructType([StructField("id", key_type), StructField("seen", TimestampType())])
    check_source_schema(source, policy({"id": "drop"}), "lake/raw/people")  # pseudonymize takes no decimal
