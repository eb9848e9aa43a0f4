"""The JSON Schema of ``audit.json`` shipped with the package, and a validator."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

#: Version of the ``audit.json`` this imagefair writes. 2.0 (issue 13): metric ``label_disagreement_rate`` (+
#: ``model_error_rate`` beside it) replaces ``estimated_noise_rate``; older folders are migrated on read by
#: :mod:`audit.migrate`. A rename, a removal or a change of meaning bumps the major version (contract.md).
SCHEMA_VERSION = "2.0"

ERROR_SCHEMA = "audit.json does not follow the schema at {where}: {message}"


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(resources.files("audit.schema").joinpath("audit.schema.json").read_text("utf-8"))


def validate_audit(audit: dict) -> None:
    """Raise ``ValueError`` naming the first place where ``audit`` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(audit), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(map(str, first.absolute_path)) or "(top level)"
        raise ValueError(ERROR_SCHEMA.format(where=where, message=first.message))
