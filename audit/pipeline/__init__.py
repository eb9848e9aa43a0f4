"""The audit pipeline: one orchestrator, two input adapters, analysis steps registered in one place.

- :mod:`audit.pipeline.core`: :func:`run_audit` (``run``), :class:`Prepared`, :func:`analyse` (the steps and
  the one ``audit.json`` assembly), :class:`AuditResult`.
- :mod:`audit.pipeline.labels_input`: the ``label-noise`` adapter (:func:`run_label_noise_audit`).
- :mod:`audit.pipeline.steps`: the step registry (:data:`~audit.pipeline.steps.STEPS`,
  :data:`~audit.pipeline.steps.GROUP_ROW_PASSES`) and the loop that runs it.
"""
from audit.pipeline.core import (ERROR_ALL_IMAGES_SKIPPED, ERROR_SINGLE_CLASS_LEFT, ERROR_UNKNOWN_PIXEL_GROUP,
                                 SCHEMA_VERSION, AuditResult, Prepared, Progress, analyse, package_versions,
                                 prepare_images, run_audit, run_per_image_stage)
from audit.pipeline.labels_input import run_label_noise_audit
from audit.pipeline.steps import GROUP_ROW_PASSES, STEPS, GroupRowPass, Step, StepOutput

__all__ = ["AuditResult", "ERROR_ALL_IMAGES_SKIPPED", "ERROR_SINGLE_CLASS_LEFT", "ERROR_UNKNOWN_PIXEL_GROUP",
           "GROUP_ROW_PASSES", "GroupRowPass", "Prepared", "Progress", "SCHEMA_VERSION", "STEPS", "Step",
           "StepOutput", "analyse", "package_versions", "prepare_images", "run_audit", "run_label_noise_audit",
           "run_per_image_stage"]
