"""OpenLineage-style column lineage of ``clean.<dataset>``, from the policy: for every
published column, the source column it comes from and what was done to it, with
``masking: true`` where the value is pseudonymised, masked, generalised, encrypted or
otherwise not published as it is (the ColumnLineageDatasetFacet's transformation
fields). ``record_state`` comes indirectly from the consent log.

Built from the policy alone (no Spark): the DAG attaches it to the ``clean.<dataset>``
Asset, and each run report carries it as ``lineage``.
"""

from __future__ import annotations

from transforms.policy import STATE_COLUMN, ColumnPolicy, Policy

PRODUCER = "https://github.com/consentgate/consentgate"
SCHEMA_URL = "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet"
CONSENT_FIELDS = ("subject_id", "purpose", "status", "recorded_at", "expires_at", "source")


def _transformation(column: ColumnPolicy) -> dict:
    rules = {column.consented.name, column.anonymized.name} - {"drop"}
    identity = rules == {"keep"}
    return {
        "type": "DIRECT",
        "subtype": "IDENTITY" if identity else "TRANSFORMATION",
        "description": f"consented rows: {column.consented.description}; "
        f"anonymised rows: {column.anonymized.description}",
        # Masked only when no row publishes the value as it is (zip_code kept for
        # consented rows and cut to a prefix for the others is not).
        "masking": "keep" not in rules,
    }


def column_lineage(policy: Policy, namespace: str) -> dict:
    """``{"columnLineage": facet}`` for the published table; ``namespace`` names the lake."""
    fields = {
        column.name: {
            "inputFields": [
                {
                    "namespace": namespace,
                    "name": policy.source,
                    "field": column.name,
                    "transformations": [_transformation(column)],
                }
            ]
        }
        for column in policy.output_columns
    }
    decided_by = [(policy.source, policy.subject_key), (policy.source, policy.event_time)]
    decided_by += [("raw/consent", name) for name in CONSENT_FIELDS]
    fields[STATE_COLUMN] = {
        "inputFields": [
            {
                "namespace": namespace,
                "name": dataset,
                "field": field,
                "transformations": [
                    {
                        "type": "INDIRECT",
                        "subtype": "CONDITIONAL",
                        "description": "consented or anonymized, from the customer's consent at the run's instant t",
                        "masking": False,
                    }
                ],
            }
            for dataset, field in decided_by
        ]
    }
    if policy.partition_by is not None:
        fields[policy.partition_column] = {
            "inputFields": [
                {
                    "namespace": namespace,
                    "name": policy.source,
                    "field": policy.event_time,
                    "transformations": [
                        {
                            "type": "DIRECT",
                            "subtype": "TRANSFORMATION",
                            "description": f"the partition: the first day of the event time's {policy.partition_by}",
                            "masking": True,
                        }
                    ],
                }
            ]
        }
    return {"columnLineage": {"_producer": PRODUCER, "_schemaURL": SCHEMA_URL, "fields": fields}}


def masked_columns(policy: Policy) -> list[str]:
    """The published columns whose values no row publishes as they are."""
    return [c.name for c in policy.output_columns if _transformation(c)["masking"]]
