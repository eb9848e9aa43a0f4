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
    version is returned as is). Documents of another major version are left for the validator to refuse."""
    return comparison
