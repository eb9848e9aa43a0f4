"""Compare two audits (OLD -> NEW): what changed in the data, the labels and the model, with verdicts.

Public API: :func:`compare_audits` (pure), :func:`load_pair` / :func:`write_comparison_folder` /
:func:`load_comparison_folder` (files), :func:`evaluate_regression` (the ``[regression]`` policy checks).
"""
from audit.compare.core import COMPARISON_SCHEMA_VERSION, Comparison, compare_audits

__all__ = ["COMPARISON_SCHEMA_VERSION", "Comparison", "compare_audits"]
