"""imagefair: audit image-classification datasets and models for bias, fairness and label quality.

The engine is a library; the Streamlit app, the reports and the CLI are views on one audit folder
(``docs/audit-folder.md``). Public API: :func:`run_audit`, :class:`AuditConfig`, :func:`write_audit_folder`.
"""
__version__ = "0.1.0"

from audit.config import AuditConfig  # noqa: E402
from audit.errors import AuditError, InputError, ModelError, PolicyError  # noqa: E402


def run_audit(config, **kwargs):
    from audit.pipeline import run_audit as _run_audit

    return _run_audit(config, **kwargs)


def write_audit_folder(out, result):
    from audit.folder import write_audit_folder as _write

    return _write(out, audit=result.audit, images=result.images, group_metrics=result.group_metrics,
                  probabilities=result.probabilities)


__all__ = ["AuditConfig", "AuditError", "InputError", "ModelError", "PolicyError", "run_audit",
           "write_audit_folder", "__version__"]
