"""The audit pipeline: one orchestrator, two input adapters, analysis steps registered in one place.

- :mod:`audit.pipeline.core`: :func:`run_audit` (``run``), :class:`Prepared`, :func:`analyse` (the steps and
  the one ``audit.json`` assembly), :class:`AuditResult`.
- :mod:`audit.pipeline.labels_input`: the ``label-noise`` adapter (:func:`run_label_noise_audit`).
- :mod:`audit.pipeline.steps`: the step registry (:data:`~audit.pipeline.steps.STEPS`,
  :data:`~audit.pipeline.steps.GROUP_ROW_PASSES`) and the loop that runs it.
"""
# Names are imported on first use (PEP 562), so that importing a submodule such as audit.pipeline.perimage (what
# a worker process of the per-image stage needs) does not import the orchestrator and every analysis with it.
_EXPORTS = {
    **dict.fromkeys(("ERROR_ALL_IMAGES_SKIPPED", "ERROR_SINGLE_CLASS_LEFT", "ERROR_UNKNOWN_PIXEL_GROUP",
                     "SCHEMA_VERSION", "AuditResult", "Prepared", "Progress", "analyse", "package_versions",
                     "prepare_images", "run_audit", "run_per_image_stage"), "audit.pipeline.core"),
    "run_label_noise_audit": "audit.pipeline.labels_input",
    **dict.fromkeys(("GROUP_ROW_PASSES", "STEPS", "GroupRowPass", "Step", "StepOutput"), "audit.pipeline.steps"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'audit.pipeline' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
