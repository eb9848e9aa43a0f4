"""The JSON Schema of ``comparison.json`` (written by ``compare``) shipped with the package, and a validator."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

ERROR_COMPARISON_SCHEMA = "comparison.json does not follow the schema at {where}: {message}"


@lru_cache(maxsize=1)
def load_comparison_schema() -> dict:
    return json.loads(resources.files("audit.schema").joinpath("comparison.schema.json").read_text("utf-8"))


def validate_comparison(comparison: dict) -> None:
    """Raise ``ValueError`` naming the first place where ``comparison`` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_comparison_schema())
    errors = sorted(validator.iter_errors(comparison), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(map(str, first.absolute_path)) or "(top level)"
        raise ValueError(ERROR_COMPARISON_SCHEMA.format(where=where, message=first.message))


def migrate_comparison(comparison: dict) -> dict:
    """Bring a ``comparison.json`` of an earlier 1.x version up to the current names (a copy; the current
    version is returned as is). Documents of another major version are left for the validator to refuse.

    1.0 -> 1.1: 1.0 adjusted only the metric rows (share changes were not adjusted, shift tests were
    Holm-adjusted among themselves): its share rows get ``scope = ""`` and ``p_adjusted = None``, its shift
    tests ``scope = ""`` (their ``p_adjusted`` is kept), and ``multiplicity`` is None.
    """
    if not isinstance(comparison, dict) or comparison.get("schema_version") != "1.0":
        return comparison
    import copy

    migrated = copy.deepcopy(comparison)
    data = migrated.get("data")
    if isinstance(data, dict):
        for key in ("class_shares", "group_shares"):
            for row in data.get(key) or []:
                if isinstance(row, dict):
                    row.setdefault("scope", "")
                    row.setdefault("p_adjusted", None)
        for test in data.get("shift_tests") or []:
            if isinstance(test, dict):
                test.setdefault("scope", "")
    migrated.setdefault("multiplicity", None)
    return migrated
