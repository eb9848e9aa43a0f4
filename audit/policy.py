"""Release policy: a TOML file of thresholds -> a verdict of checks with the contract's status words.

A policy (``policy.example.toml`` documents every key) lists thresholds; :func:`evaluate_policy` compares them
with the numbers an audit already computed (``audit.json`` and ``group_metrics.parquet``) and returns a
:class:`Verdict`. Nothing here recomputes an analysis: values, intervals and the ``insufficient_evidence`` flags
are read from the audit. The only arithmetic is combining two stored intervals into an interval for a gap or
a ratio between two groups (see :func:`_difference_interval`).

Check statuses (contract): ``PASS``; ``WARN`` (passes, but within ``[gate] warn_margin`` of the threshold);
``FAIL``; ``INSUFFICIENT_EVIDENCE`` (the group is too small / too uncertain, or the interval straddles the
threshold); ``ERROR`` (the analysis the check needs failed, or the policy names something the audit does not
have); ``SKIPPED`` (the audit has no such analysis, e.g. no model). Overall: any ERROR -> ``ERROR``; else any
FAIL (with ``strict``, also any INSUFFICIENT_EVIDENCE) -> ``FAIL``; else ``PASS``.

Rows: checks about one number (``label_noise.max_rate``, ``representation.max_class_imbalance_ratio``) give
one row; checks over groups give one row per attribute (or intersection) and checks over classes one row,
each row naming the group or class that decided its status (the worst offender) and listing the other
offenders in its message.
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from audit.display import group_ranks, group_sort_key, join_names, tied_extremes
from audit.errors import PolicyError
from audit.types import INTERSECTION_SEPARATOR, MISSING_GROUP, json_float

# -- messages ------------------------------------------------------------------------------------------------
ERROR_POLICY_NOT_FOUND = "policy file {path} does not exist: give the path of a TOML policy (see policy.example.toml)"
ERROR_POLICY_UNREADABLE = "policy file {path} cannot be read: {reason}"
ERROR_POLICY_TOML = "policy file {path} is not valid TOML: {reason} (see policy.example.toml)"
ERROR_UNKNOWN_SECTION = ("policy file {path}: unknown section [{section}]; the sections are {allowed} "
                         "(see policy.example.toml)")
ERROR_SECTION_NOT_TABLE = "policy file {path}: [{section}] must be a table of keys, got {got}"
ERROR_UNKNOWN_KEY = ("policy file {path}: unknown key {key} ; the keys of [{section}] are {allowed} "
                     "(see policy.example.toml)")
ERROR_WRONG_TYPE = "policy file {path}: {key} must be {expected}, got {got} ({value!r})"
ERROR_VALUE_RANGE = "policy file {path}: {key} must be {what}, got {value!r}"
ERROR_EMPTY_POLICY = ("policy file {path} asks for no checks (it is empty, truncated, or holds only settings): a gate "
                      "without checks passes anything. Add thresholds (see policy.example.toml), or give "
                      "--allow-empty to pass on purpose")
ERROR_ONLY_REGRESSION = ("policy file {path} has only [regression] checks, and they compare with a baseline: give "
                         "--baseline OLD (the earlier audit), add checks of this audit, or give --allow-empty to "
                         "pass on purpose")

#: Keys that are settings of the checks, not checks themselves.
SETTING_KEYS = frozenset({"metric", "attributes", "warn_margin", "basis"})
#: ``[label_noise] basis``: what the label checks judge (issue 13). ``verified``: the label-error rate estimated
#: from reviews of a random sample (``review --status``); ``model``: the model-label disagreement rate, a
#: screening figure.
LABEL_NOISE_BASES = ("verified", "model")
ERROR_UNKNOWN_BASIS = ("policy file {path}: label_noise.basis {value!r} must be \"verified\" (the label-error rate "
                       "from reviews of a random sample, the default) or \"model\" (the model-label disagreement "
                       "rate, a screening figure)")
ERROR_UNKNOWN_METRIC = ("policy file {path}: performance.metric {value!r} is not a group metric; use one of "
                        "{allowed}")

# -- status words (contract) ---------------------------------------------------------------------------------
MESSAGE_NO_BASELINE = "needs a baseline audit: run `gate DIR --baseline OLD --policy FILE`"
PASS = "PASS"
WARN = "WARN"
FAIL = "FAIL"
INSUFFICIENT_EVIDENCE = "INSUFFICIENT_EVIDENCE"
ERROR = "ERROR"
SKIPPED = "SKIPPED"
#: The one ordering of check statuses, most serious first (reports, the gate's table and the app sort by it).
STATUS_ORDER = (ERROR, FAIL, INSUFFICIENT_EVIDENCE, WARN, PASS, SKIPPED)


#: Shown before each status in Markdown summaries (report, gate, comparison); the words stay beside them for
#: screen readers.
STATUS_MARK = {PASS: "✅", WARN: "⚠️", FAIL: "❌", INSUFFICIENT_EVIDENCE: "❔", ERROR: "💥", SKIPPED: "⏭️"}


def status_rank(status) -> int:
    """Position of ``status`` in :data:`STATUS_ORDER` (unknown statuses last)."""
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)
CHECK_STATUSES = (PASS, WARN, FAIL, INSUFFICIENT_EVIDENCE, ERROR, SKIPPED)
#: Which status decides a row that summarises several groups (most severe first).
_SEVERITY = {ERROR: 0, FAIL: 1, INSUFFICIENT_EVIDENCE: 2, WARN: 3, PASS: 4, SKIPPED: 5}

#: Aggregate (all-class) metrics ``performance.metric`` may name.
PERFORMANCE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "top_k_accuracy", "expected_calibration_error")

_NUMBER = "a number"
_COUNT = "a whole number"
_TEXT = "a string"
_TEXT_LIST = "a list of strings"

#: Every key of the policy: section -> key -> (expected type, constraint). Additions to the contract keys:
#: ``[label_noise] attributes`` and ``[performance] attributes`` (which attributes the per-group checks look
#: at; default as ``[representation] attributes``: the audit's single group attributes).
POLICY_KEYS = {
    "label_noise": {"max_rate": (_NUMBER, "rate"), "max_class_rate": (_NUMBER, "rate"),
                    "max_group_rate": (_NUMBER, "rate"), "attributes": (_TEXT_LIST, None),
                    "basis": (_TEXT, None)},
    "representation": {"min_group_images": (_COUNT, "positive"), "attributes": (_TEXT_LIST, None),
                       "max_missing_rate": (_NUMBER, "rate"), "max_class_imbalance_ratio": (_NUMBER, "ratio"),
                       "max_association": (_NUMBER, "rate")},
    # issue 11: every performance metric lies in [0, 1], so its thresholds do too; a ratio of 0 checks nothing
    "performance": {"metric": (_TEXT, None), "min_worst_group": (_NUMBER, "rate"), "max_gap": (_NUMBER, "rate"),
                    "min_ratio": (_NUMBER, "positive_rate"), "attributes": (_TEXT_LIST, None)},
    "gate": {"warn_margin": (_NUMBER, "non_negative")},
    # [regression]: checks of NEW against a baseline audit (gate NEW --baseline OLD); see audit/compare/gate.py
    "regression": {"metric": (_TEXT, None), "max_drop": (_NUMBER, "rate"), "max_worst_group_drop": (_NUMBER, "rate"),
                   "max_gap_increase": (_NUMBER, "rate"), "max_removed_share": (_NUMBER, "rate"),
                   "attributes": (_TEXT_LIST, None)},
    # issue 16: several labels per image (run/label-noise --annotations)
    "annotation": {"min_agreement": (_NUMBER, "rate"), "max_annotator_error": (_NUMBER, "rate"),
                   "attributes": (_TEXT_LIST, None)},
}

#: Analyses (names used in ``audit.json`` ``errors``) each section's checks need.
_NEEDS = {
    "label_noise.max_rate": ("label_noise",),
    "label_noise.max_class_rate": ("label_noise", "label_noise_by_group"),
    "label_noise.max_group_rate": ("label_noise", "label_noise_by_group"),
    "representation.min_group_images": ("attribute_distribution",),
    "representation.max_missing_rate": ("attribute_distribution",),
    "representation.max_class_imbalance_ratio": ("class_distribution",),
    "representation.max_association": ("associations",),
    "performance.min_worst_group": ("group_performance",),
    "performance.max_gap": ("group_performance",),
    "performance.min_ratio": ("group_performance",),
    "annotation.min_agreement": ("annotations",),
    "annotation.max_annotator_error": ("annotations",),
}


@dataclass(frozen=True)
class Policy:
    """Thresholds of a release policy; ``None`` = the check is not asked for.

    Attributes mirror the TOML keys (``<section>_<key>``); ``source`` is the file it was read from.
    """

    label_noise_max_rate: float | None = None
    label_noise_max_class_rate: float | None = None
    label_noise_max_group_rate: float | None = None
    label_noise_attributes: tuple | None = None
    label_noise_basis: str | None = None
    representation_min_group_images: int | None = None
    representation_attributes: tuple | None = None
    representation_max_missing_rate: float | None = None
    representation_max_class_imbalance_ratio: float | None = None
    representation_max_association: float | None = None
    performance_metric: str = "accuracy"
    performance_min_worst_group: float | None = None
    performance_max_gap: float | None = None
    performance_min_ratio: float | None = None
    performance_attributes: tuple | None = None
    gate_warn_margin: float = 0.0
    regression_metric: str | None = None
    regression_max_drop: float | None = None
    regression_max_worst_group_drop: float | None = None
    regression_max_gap_increase: float | None = None
    regression_max_removed_share: float | None = None
    regression_attributes: tuple | None = None
    annotation_min_agreement: float | None = None
    annotation_max_annotator_error: float | None = None
    annotation_attributes: tuple | None = None
    source: str | None = None

    def to_dict(self) -> dict:
        """The policy as nested TOML-shaped sections (keys left out of the file are omitted, except defaults)."""
        out: dict = {}
        for item in fields(self):
            if item.name == "source":
                continue
            value = getattr(self, item.name)
            if value is None:
                continue
            section, key = _split_field(item.name)
            out.setdefault(section, {})[key] = list(value) if isinstance(value, tuple) else value
        return out


def _split_field(name: str) -> tuple[str, str]:
    for section in POLICY_KEYS:
        if name.startswith(section + "_"):
            return section, name[len(section) + 1:]
    raise KeyError(name)


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def policy_from_dict(data: dict, *, source: str = "<policy>") -> Policy:
    """Validate a parsed policy (nested dict, as from TOML) and return a :class:`Policy`.

    Raises
    ------
    PolicyError
        An unknown section or key, a wrong type or an impossible value; the message names the key.
    """
    values: dict = {}
    for section, table in data.items():
        if section not in POLICY_KEYS:
            raise PolicyError(ERROR_UNKNOWN_SECTION.format(path=source, section=section,
                                                           allowed=", ".join(f"[{s}]" for s in POLICY_KEYS)),
                              source=source, column=section)
        if not isinstance(table, dict):
            raise PolicyError(ERROR_SECTION_NOT_TABLE.format(path=source, section=section, got=_type_name(table)),
                              source=source, column=section)
        allowed = POLICY_KEYS[section]
        for key, value in table.items():
            name = f"{section}.{key}"
            if key not in allowed:
                raise PolicyError(ERROR_UNKNOWN_KEY.format(path=source, key=name, section=section,
                                                           allowed=", ".join(allowed)), source=source, column=name)
            expected, constraint = allowed[key]
            values[f"{section}_{key}"] = _check_value(value, expected, constraint, name=name, source=source)
    metric = values.get("performance_metric")
    if metric is not None and metric not in PERFORMANCE_METRICS:
        allowed = ", ".join(PERFORMANCE_METRICS)
        raise PolicyError(ERROR_UNKNOWN_METRIC.format(path=source, value=metric, allowed=allowed),
                          source=source, column="performance.metric")
    basis = values.get("label_noise_basis")
    if basis is not None and basis not in LABEL_NOISE_BASES:
        raise PolicyError(ERROR_UNKNOWN_BASIS.format(path=source, value=basis), source=source,
                          column="label_noise.basis")
    return Policy(**values, source=source)


def _check_value(value, expected: str, constraint, *, name: str, source: str):
    def wrong():
        return PolicyError(ERROR_WRONG_TYPE.format(path=source, key=name, expected=expected, got=_type_name(value),
                                                   value=value), source=source, column=name)

    if expected == _TEXT:
        if not isinstance(value, str):
            raise wrong()
        return value
    if expected == _TEXT_LIST:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong()
        return tuple(value)
    if expected == _COUNT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        if constraint == "positive" and value < 1:
            raise PolicyError(ERROR_VALUE_RANGE.format(path=source, key=name, what="at least 1", value=value),
                              source=source, column=name)
        return int(value)
    # a number: TOML integers are accepted where a number is expected (max_class_imbalance_ratio = 10)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong()
    value = float(value)
    problem = None
    if not math.isfinite(value):
        problem = "a finite number"
    elif constraint == "rate" and not 0 <= value <= 1:
        problem = "between 0 and 1"
    elif constraint == "positive_rate" and not 0 < value <= 1:
        problem = "above 0 and at most 1 (a ratio of 0 would pass any gap)"
    elif constraint == "ratio" and value < 1:
        problem = "at least 1 (largest class / smallest class)"
    elif constraint == "non_negative" and value < 0:
        problem = "0 or more"
    if problem:
        raise PolicyError(ERROR_VALUE_RANGE.format(path=source, key=name, what=problem, value=value),
                          source=source, column=name)
    return value


def policy_checks(policy: "Policy", *, sections=None) -> list[str]:
    """``<section>.<key>`` of every threshold the policy sets (settings such as ``metric`` left out), in
    ``sections`` when given."""
    names = []
    for item in fields(policy):
        if item.name == "source" or getattr(policy, item.name) is None:
            continue
        section, key = _split_field(item.name)
        if key in SETTING_KEYS or (sections is not None and section not in sections):
            continue
        names.append(f"{section}.{key}")
    return names


def load_policy(path: str | os.PathLike) -> Policy:
    """Read and validate a TOML policy file.

    Raises
    ------
    PolicyError
        Missing or unreadable file, invalid TOML, or an unknown key / wrong type (the message names the key).
    """
    path = Path(path)
    if not path.is_file():
        raise PolicyError(ERROR_POLICY_NOT_FOUND.format(path=path), source=str(path))
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8-sig"))  # a BOM (Windows editors) is not TOML
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(ERROR_POLICY_TOML.format(path=path, reason=error), source=str(path)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(ERROR_POLICY_UNREADABLE.format(path=path, reason=error), source=str(path)) from None
    return policy_from_dict(data, source=str(path))


# -- verdict -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One row of a verdict (contract fields).

    Attributes
    ----------
    name : str
        ``<section>.<key>`` of the policy, e.g. ``performance.min_worst_group``.
    status : str
        One of :data:`CHECK_STATUSES`.
    value : float or None
        The number compared with the threshold (for rows over groups: the deciding group's value).
    threshold : float or None
        The policy's threshold.
    attribute, group, class_ : str
        What the value belongs to (``""`` when not applicable); ``class_`` is written as ``class``.
    message : str
        One sentence with the numbers that decided the status (intervals, n, other offenders).
    """

    name: str
    status: str
    value: float | None
    threshold: float | None
    attribute: str = ""
    group: str = ""
    class_: str = ""
    message: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "value": json_float(self.value),
                "threshold": json_float(self.threshold), "attribute": self.attribute, "group": self.group,
                "class": self.class_, "message": self.message}


@dataclass(frozen=True)
class Verdict:
    """The overall status and the checks (contract ``verdict`` object via :meth:`to_dict`)."""

    status: str
    checks: tuple = field(default_factory=tuple)
    strict: bool = False

    def to_dict(self) -> dict:
        return {"status": self.status, "checks": [c.to_dict() for c in self.checks]}

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)


def overall_status(checks, *, strict: bool = False) -> str:
    """Contract rule: any ERROR -> ERROR; else any FAIL (strict: or INSUFFICIENT_EVIDENCE) -> FAIL; else PASS."""
    statuses = {c.status if isinstance(c, Check) else c["status"] for c in checks}
    if ERROR in statuses:
        return ERROR
    if FAIL in statuses or (strict and INSUFFICIENT_EVIDENCE in statuses):
        return FAIL
    return PASS


def exit_code(status: str) -> int:
    """Gate exit code of an overall status: PASS 0, FAIL 1, ERROR 2."""
    return {PASS: 0, FAIL: 1, ERROR: 2}[status]


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if value == 0:
        return "0"  # never "-0" (a drop of -0.0 points)
    if isinstance(value, (int,)) or float(value).is_integer() and abs(value) >= 1:
        return f"{value:g}"
    return f"{value:.{digits}g}"


def _ci(low, high) -> str:
    if low is None or high is None or _isnan(low) or _isnan(high):
        return ""
    return f" (95 % CI {_fmt(low)}-{_fmt(high)})"


def _isnan(value) -> bool:
    try:
        return value is None or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def _decide(value, low, high, threshold, *, upper: bool, margin: float, insufficient: bool = False) -> str:
    """Status of one value against one threshold.

    ``upper=True``: the value must not exceed the threshold; ``False``: it must reach it. The interval
    ``[low, high]`` (when known) straddling the threshold, or ``insufficient``, gives INSUFFICIENT_EVIDENCE.
    """
    if insufficient or _isnan(value):
        return INSUFFICIENT_EVIDENCE
    has_interval = not (_isnan(low) or _isnan(high))
    if has_interval and low < threshold < high:
        return INSUFFICIENT_EVIDENCE
    if upper:
        if value > threshold:
            return FAIL
        return WARN if value > threshold - margin else PASS
    if value < threshold:
        return FAIL
    return WARN if value < threshold + margin else PASS


class _Context:
    """What every check needs from the audit: sections, errors, group metrics, attributes."""

    def __init__(self, audit: dict, group_metrics: pd.DataFrame, policy: Policy):
        self.audit = audit
        self.policy = policy
        self.analyses = audit.get("analyses") or {}
        self.failed = {str(e.get("analysis")): str(e.get("message", "")) for e in audit.get("errors") or []}
        frame = group_metrics if group_metrics is not None else pd.DataFrame()
        for column in ("attribute", "group", "class", "metric", "verdict"):
            if column in frame:
                frame = frame.assign(**{column: frame[column].fillna("").astype(str)})
        self.gm = frame
        self.group_attributes = list((audit.get("dataset") or {}).get("group_attributes") or [])
        self.margin = policy.gate_warn_margin

    def unavailable(self, name: str, section: str, *, skip_reason: str) -> Check | None:
        """An ERROR row if an analysis the check needs failed, a SKIPPED row if the audit lacks it, else None."""
        for analysis in _NEEDS[name]:
            if analysis in self.failed:
                return Check(name, ERROR, None, None, message=f"the {analysis} analysis failed, so this check "
                             f"cannot be evaluated: {self.failed[analysis]}")
        if section not in self.analyses:
            return Check(name, SKIPPED, None, None, message=skip_reason)
        return None

    def rows(self, metric: str, *, attribute: str | None = None, class_rows: bool = False) -> pd.DataFrame:
        gm = self.gm
        if gm.empty or "metric" not in gm:
            return gm
        keep = gm["metric"] == metric
        keep &= (gm["class"] != "") if class_rows else (gm["class"] == "")
        if attribute is not None:
            keep &= gm["attribute"] == attribute
        return gm[keep]


def evaluate_policy(audit: dict, group_metrics: pd.DataFrame, policy: Policy, *, strict: bool = False,
                    reviews: dict | None = None) -> Verdict:
    """Compare an audit with a policy.

    Parameters
    ----------
    audit : dict
        The content of ``audit.json``.
    group_metrics : DataFrame
        ``group_metrics.parquet`` (contract columns).
    policy : Policy
        From :func:`load_policy`.
    strict : bool
        Count INSUFFICIENT_EVIDENCE as a failure in the overall status (the gate's ``--strict``).
    reviews : dict, optional
        The verified label-error rate (``review --status``: :func:`audit.review_sample.load_review_status`).
        ``[label_noise]`` checks judge it unless the policy says ``basis = "model"``; without it (or without
        reviews) they are INSUFFICIENT_EVIDENCE and say how many reviews are needed.

    Returns
    -------
    Verdict
        Checks in policy order (label noise, representation, performance); only the keys the policy sets
        produce checks. ``to_dict()`` gives the contract's verdict object.
    """
    context = _Context(audit, group_metrics, policy)
    checks: list[Check] = []
    screening = policy.label_noise_basis == "model"  # default: the verified rate (issue 13)
    if not screening:
        checks.extend(_check_verified(context, reviews))
    if screening and policy.label_noise_max_rate is not None:
        checks.append(_check_noise_rate(context))
    if screening and policy.label_noise_max_class_rate is not None:
        checks.append(_check_noise_class_rate(context))
    if screening and policy.label_noise_max_group_rate is not None:
        checks.extend(_check_groups(context, "label_noise.max_group_rate", "label_noise", DISAGREEMENT_METRIC,
                                    policy.label_noise_max_group_rate, upper=True,
                                    attributes=policy.label_noise_attributes,
                                    skip_reason="the audit has no label-noise estimate (no model or predictions)"))
    if policy.representation_min_group_images is not None:
        checks.extend(_check_min_group_images(context))
    if policy.representation_max_missing_rate is not None:
        checks.extend(_check_missing_rate(context))
    if policy.representation_max_class_imbalance_ratio is not None:
        checks.append(_check_imbalance(context))
    if policy.representation_max_association is not None:
        checks.extend(_check_association(context))
    performance = [("performance.min_worst_group", policy.performance_min_worst_group),
                   ("performance.max_gap", policy.performance_max_gap),
                   ("performance.min_ratio", policy.performance_min_ratio)]
    for name, threshold in performance:
        if threshold is not None:
            checks.extend(_check_performance(context, name, threshold))
    if policy.annotation_min_agreement is not None:
        checks.extend(_check_min_agreement(context))
    if policy.annotation_max_annotator_error is not None:
        checks.append(_check_annotator_error(context))
    # [regression] compares with a baseline audit (gate DIR --baseline OLD, audit/compare/gate.py): without one
    # its keys are listed as SKIPPED rather than silently ignored
    for key in ("max_drop", "max_worst_group_drop", "max_gap_increase", "max_removed_share"):
        if getattr(policy, f"regression_{key}") is not None:
            checks.append(Check(f"regression.{key}", SKIPPED, None, getattr(policy, f"regression_{key}"),
                                message=MESSAGE_NO_BASELINE))
    checks = tuple(checks)
    return Verdict(status=overall_status(checks, strict=strict), checks=checks, strict=strict)


# -- label noise ---------------------------------------------------------------------------------------------
_NO_NOISE = "the audit has no label-noise estimate (no model or predictions were given)"
#: The metric ``[label_noise]`` keys check (issue 13: the model-label disagreement rate, a screening figure).
DISAGREEMENT_METRIC = "label_disagreement_rate"
MESSAGE_NOISE_RATE = ("model-label disagreement rate {value}{interval} (a screening figure, not a label-error rate; "
                      "model error rate on the same images {error}), {n_flagged} images flagged; limit {limit}")
MESSAGE_NO_CLASS_ROWS = "group_metrics.parquet has no per-class label_disagreement_rate rows"


def _check_noise_rate(context: _Context) -> Check:
    name = "label_noise.max_rate"
    threshold = context.policy.label_noise_max_rate
    missing = context.unavailable(name, "label_noise", skip_reason=_NO_NOISE)
    if missing:
        return Check(name, missing.status, None, threshold, message=missing.message)
    section = context.analyses["label_noise"]
    value = section.get("label_disagreement_rate")
    low, high = (list(section.get("label_disagreement_rate_ci") or []) + [None, None])[:2]
    status = _decide(value, low, high, threshold, upper=True, margin=context.margin)
    error = section.get("model_error_rate")
    return Check(name, status, value, threshold, attribute="all", group="all",
                 message=MESSAGE_NOISE_RATE.format(value=_fmt(value), interval=_ci(low, high),
                                                   error="not recorded" if error is None else _fmt(error),
                                                   n_flagged=section.get("n_label_issues"), limit=_fmt(threshold))
                 + _explain(status))


MESSAGE_VERIFIED_RATE = ("verified label-error rate {value}{interval} from {reviewed} reviewed images of a random "
                         "sample; {confirmed} confirmed errors; limit {limit}")
MESSAGE_VERIFIED_MORE = "; about {needed} more reviews of the random sample (in its order) would decide it"
MESSAGE_NO_VERIFIED = ("no verified label-error rate yet ({why}): review a random sample of about {needed} images "
                       "(`python -m audit review DIR --sample {needed} --out sample.csv`, then `--import`) or in the "
                       "app's random queue; basis = \"model\" checks the model-label disagreement rate instead "
                       "(a screening figure)")
WHY_NO_STATUS = ("a run's verdict is made before its random sample is reviewed; `gate DIR --policy FILE` reads the "
                 "reviews")


def needs_review_status(policy: Policy) -> bool:
    """Whether :func:`evaluate_policy` judges the verified label-error rate (so the caller should read it)."""
    return policy.label_noise_basis != "model" and any(
        v is not None for v in (policy.label_noise_max_rate, policy.label_noise_max_class_rate,
                                policy.label_noise_max_group_rate))


def _verified_rows(rows, key: str, *, attribute: str = "all") -> pd.DataFrame:
    """``review --status`` rows (by_class / by_group) as group-metric-like rows for :func:`_summarise`."""
    frame = pd.DataFrame([{"attribute": r.get("attribute", attribute), "group": r.get("group", "all"),
                           "class": r.get("class", ""), "n": int(r.get("reviewed") or 0),
                           "value": math.nan if r.get("estimate") is None else float(r["estimate"]),
                           "ci_low": math.nan if r.get("ci_low") is None else float(r["ci_low"]),
                           "ci_high": math.nan if r.get("ci_high") is None else float(r["ci_high"]),
                           "insufficient_evidence": r.get("estimate") is None} for r in rows],
                         columns=["attribute", "group", "class", "n", "value", "ci_low", "ci_high",
                                  "insufficient_evidence"])
    return frame


def _check_verified(context: _Context, reviews: dict | None) -> list[Check]:
    """``[label_noise]`` checks on the verified label-error rate (``basis = "verified"``, the default)."""
    from audit.analysis.stratified import reviews_needed

    policy = context.policy
    asked = [(name, threshold) for name, threshold in (
        ("label_noise.max_rate", policy.label_noise_max_rate),
        ("label_noise.max_class_rate", policy.label_noise_max_class_rate),
        ("label_noise.max_group_rate", policy.label_noise_max_group_rate)) if threshold is not None]
    if not asked:
        return []
    rate = (reviews or {}).get("label_error_rate") or {}
    if rate.get("estimate") is None:
        # the status message's first clause, without its ", so no verified label-error rate" (said already)
        why = WHY_NO_STATUS if reviews is None else (
            (reviews.get("message") or "no review yet").split(":")[0].split(", so no verified")[0])
        out = []
        for name, threshold in asked:
            needed = reviews_needed(None, None, None, 0, threshold=threshold)
            out.append(Check(name, INSUFFICIENT_EVIDENCE, None, threshold, attribute="all", group="all",
                             message=MESSAGE_NO_VERIFIED.format(why=why, needed=needed)))
        return out
    out = []
    for name, threshold in asked:
        if name == "label_noise.max_rate":
            value, low, high = rate["estimate"], rate["ci_low"], rate["ci_high"]
            status = _decide(value, low, high, threshold, upper=True, margin=context.margin)
            message = MESSAGE_VERIFIED_RATE.format(value=_fmt(value), interval=_ci(low, high),
                                                   reviewed=rate["reviewed"], confirmed=rate["confirmed_errors"],
                                                   limit=_fmt(threshold)) + _explain(status)
            if status == INSUFFICIENT_EVIDENCE:
                message += MESSAGE_VERIFIED_MORE.format(needed=reviews_needed(value, low, high, rate["reviewed"],
                                                                              threshold=threshold))
            out.append(Check(name, status, value, threshold, attribute="all", group="all", message=message))
        elif name == "label_noise.max_class_rate":
            rows = _verified_rows(reviews.get("by_class") or [], "class")
            if rows.empty:
                out.append(Check(name, SKIPPED, None, threshold, attribute="all", message="no class has reviews"))
            else:
                out.append(_summarise(name, rows, threshold, upper=True, margin=context.margin, what="class",
                                      attribute="all"))
        else:
            by_group = pd.DataFrame(reviews.get("by_group") or [], columns=["attribute", "group", "estimate",
                                                                            "ci_low", "ci_high", "reviewed"])
            attributes = _attributes(context, policy.label_noise_attributes)
            if not attributes:
                out.append(Check(name, SKIPPED, None, threshold, message="the audit has no group attributes"))
            for attribute in attributes:
                block = by_group[(by_group["attribute"] == attribute) & (by_group["group"] != MISSING_GROUP)]
                if block.empty:
                    out.append(Check(name, INSUFFICIENT_EVIDENCE, None, threshold, attribute=attribute,
                                     message=f"no verified rate per group of {attribute} (the review status lists "
                                             f"none; draw the sample with --policy to stratify by it)"))
                    continue
                rows = _verified_rows(block.to_dict("records"), "group", attribute=attribute)
                out.append(_summarise(name, rows, threshold, upper=True, margin=context.margin, what="group",
                                      attribute=attribute))
    return out


def _explain(status: str) -> str:
    return {PASS: "", WARN: " (within the warning margin)", FAIL: "",
            INSUFFICIENT_EVIDENCE: " (the interval straddles the limit or the evidence is too thin to decide)"
            }.get(status, "")


def _check_noise_class_rate(context: _Context) -> Check:
    name = "label_noise.max_class_rate"
    threshold = context.policy.label_noise_max_class_rate
    missing = context.unavailable(name, "label_noise", skip_reason=_NO_NOISE)
    if missing:
        return Check(name, missing.status, None, threshold, message=missing.message)
    rows = context.rows(DISAGREEMENT_METRIC, attribute="all", class_rows=True)
    if rows.empty:
        return Check(name, SKIPPED, None, threshold, attribute="all", message=MESSAGE_NO_CLASS_ROWS)
    return _summarise(name, rows, threshold, upper=True, margin=context.margin, what="class", attribute="all")


def _summarise(name: str, rows: pd.DataFrame, threshold: float, *, upper: bool, margin: float, what: str,
               attribute: str) -> Check:
    """One row for a set of groups (or classes): the status of the worst, the offenders in the message."""
    key = "class" if what == "class" else "group"
    statuses = [
        _decide(r.value, r.ci_low, r.ci_high, threshold, upper=upper, margin=margin,
                insufficient=bool(r.insufficient_evidence))
        for r in rows.itertuples(index=False)]
    ranks = group_ranks(rows[key].astype(str))  # ties in natural order (0-2, 3-9, 10-19)
    rows = rows.assign(_status=statuses, _severity=[_SEVERITY[s] for s in statuses],
                       _natural=rows[key].astype(str).map(ranks))
    # worst offender: most severe status, then the value furthest on the wrong side
    rows = rows.sort_values(["_severity", "value", "_natural"], ascending=[True, not upper, True],
                            na_position="last", kind="mergesort")
    decider = rows.iloc[0]
    status = str(decider["_status"])
    counts = rows["_status"].value_counts()

    def listing(status_word: str, limit: int = 5) -> str:
        part = rows[rows["_status"] == status_word]
        items = [f"{r[key]} {_fmt(r['value'])}{_ci(r['ci_low'], r['ci_high'])} n={int(r['n'])}"
                 for _, r in part.head(limit).iterrows()]
        more = len(part) - limit
        return "; ".join(items) + (f"; and {more} more" if more > 0 else "")

    limit_word = "above" if upper else "below"
    parts = [f"{len(rows)} {what}{'es' if what == 'class' else 's'} checked against {_fmt(threshold)}"]
    if counts.get(FAIL, 0):
        parts.append(f"{counts[FAIL]} {limit_word} the limit: {listing(FAIL)}")
    if counts.get(INSUFFICIENT_EVIDENCE, 0):
        parts.append(f"{counts[INSUFFICIENT_EVIDENCE]} undecided (too small, or the interval straddles the "
                     f"limit): {listing(INSUFFICIENT_EVIDENCE, 3)}")
    if counts.get(WARN, 0):
        parts.append(f"{counts[WARN]} within the warning margin: {listing(WARN, 3)}")
    if status == PASS:
        parts.append(f"worst {decider[key]} {_fmt(decider['value'])}{_ci(decider['ci_low'], decider['ci_high'])}")
    return Check(name, status, _float(decider["value"]), threshold, attribute=attribute,
                 group=str(decider["group"]) if key == "group" else "all",
                 class_=str(decider["class"]) if key == "class" else "", message="; ".join(parts))


def _float(value):
    return None if _isnan(value) else float(value)


def _judged_groups(rows: pd.DataFrame) -> pd.DataFrame | None:
    """The groups a per-group check judges: not ``all``, and not the ``<missing>`` group (images without a
    value are not a population; ``representation.max_missing_rate`` covers them). None when there are no rows."""
    if rows.empty:
        return None
    rows = rows[rows["group"] != "all"]
    if rows.empty:
        return None
    missing = rows["group"].map(lambda g: MISSING_GROUP in g.split(INTERSECTION_SEPARATOR))
    return rows[~missing]


def _attributes(context: _Context, configured) -> list[str]:
    """The attributes a check looks at; an intersection named in another order ("race & age") is matched
    to the audit's own name ("age & race"), since the audit orders intersections as the attributes were given."""
    if configured is None:
        return list(context.group_attributes)
    known = set(context.gm["attribute"].unique()) if "attribute" in context.gm else set()
    distribution = context.analyses.get("attribute_distribution") or {}
    known |= set(distribution.get("intersections") or {}) | set(distribution.get("attributes") or {})
    by_parts = {frozenset(name.split(INTERSECTION_SEPARATOR)): name for name in known}
    resolved = []
    for name in configured:
        parts = frozenset(part.strip() for part in str(name).split(INTERSECTION_SEPARATOR.strip()))
        resolved.append(name if name in known else by_parts.get(parts, name))
    return resolved


def _check_groups(context: _Context, name: str, section: str, metric: str, threshold: float, *, upper: bool,
                  attributes, skip_reason: str) -> list[Check]:
    missing = context.unavailable(name, section, skip_reason=skip_reason)
    if missing:
        return [Check(name, missing.status, None, threshold, message=missing.message)]
    attributes = _attributes(context, attributes)
    if not attributes:
        return [Check(name, SKIPPED, None, threshold, message="the audit has no group attributes")]
    out = []
    for attribute in attributes:
        rows = _judged_groups(context.rows(metric, attribute=attribute))
        if rows is None:
            out.append(Check(name, ERROR, None, threshold, attribute=attribute,
                             message=f"group_metrics.parquet has no {metric} rows for attribute {attribute!r}: "
                                     f"check the attribute name in the policy (audit attributes: "
                                     f"{', '.join(context.group_attributes) or 'none'})"))
            continue
        if rows.empty:
            out.append(Check(name, SKIPPED, None, threshold, attribute=attribute,
                             message=f"{attribute} has only images without a value (<missing>)"))
            continue
        out.append(_summarise(name, rows, threshold, upper=upper, margin=context.margin, what="group",
                              attribute=attribute))
    return out


# -- representation ------------------------------------------------------------------------------------------
def _check_min_group_images(context: _Context) -> list[Check]:
    name = "representation.min_group_images"
    threshold = context.policy.representation_min_group_images
    missing = context.unavailable(name, "attribute_distribution",
                                  skip_reason="the audit has no attribute distribution")
    if missing:
        return [Check(name, missing.status, None, threshold, message=missing.message)]
    attributes = _attributes(context, context.policy.representation_attributes)
    if not attributes:
        return [Check(name, SKIPPED, None, threshold, message="the audit has no group attributes")]
    section = context.analyses["attribute_distribution"]
    out = []
    for attribute in attributes:
        entry = (section.get("attributes") or {}).get(attribute) or (section.get("intersections") or {}).get(attribute)
        groups = None
        if entry is not None and entry.get("groups") is not None:
            groups = [(str(g["group"]), int(g["n"])) for g in entry["groups"]]
        else:
            rows = context.rows("share", attribute=attribute)
            if not rows.empty:
                groups = [(str(r.group), int(r.n)) for r in rows.itertuples(index=False)]
        if groups is None:
            out.append(Check(name, ERROR, None, threshold, attribute=attribute,
                             message=f"the audit has no attribute or intersection {attribute!r}: check the policy's "
                                     f"representation.attributes (audit attributes: "
                                     f"{', '.join(context.group_attributes) or 'none'})"))
            continue
        groups = [(g, n) for g, n in groups if MISSING_GROUP not in g.split(INTERSECTION_SEPARATOR)]
        if not groups:
            out.append(Check(name, SKIPPED, None, threshold, attribute=attribute,
                             message=f"{attribute} has no non-missing groups"))
            continue
        groups.sort(key=lambda item: (item[1], group_sort_key(item[0])))  # ties in natural order (0-2, 3-9)
        small = [(g, n) for g, n in groups if n < threshold]
        near = [(g, n) for g, n in groups if threshold <= n < threshold + context.margin]
        group, n = groups[0]
        status = FAIL if small else WARN if near else PASS
        tied = [g for g, m in groups if m == n]
        message = (f"{len(groups)} groups; smallest {group} with {n} image{'' if n == 1 else 's'} "
                   f"(minimum {threshold})" if len(tied) == 1
                   else f"{len(groups)} groups; smallest {join_names(tied, limit=3)} with {n} images each "
                        f"(minimum {threshold})")
        if small:
            message += f"; {len(small)} below the minimum: " + ", ".join(f"{g} ({n})" for g, n in small[:8])
            message += f" and {len(small) - 8} more" if len(small) > 8 else ""
        if entry is not None and entry.get("n_cells_empty"):
            message += f"; {entry['n_cells_empty']} combinations have no image at all"
        out.append(Check(name, status, float(n), float(threshold), attribute=attribute, group=group,
                         message=message))
    return out


def _check_missing_rate(context: _Context) -> list[Check]:
    name = "representation.max_missing_rate"
    threshold = context.policy.representation_max_missing_rate
    missing = context.unavailable(name, "attribute_distribution",
                                  skip_reason="the audit has no attribute distribution")
    if missing:
        return [Check(name, missing.status, None, threshold, message=missing.message)]
    attributes = [a for a in _attributes(context, context.policy.representation_attributes) if " & " not in a]
    if not attributes:
        return [Check(name, SKIPPED, None, threshold, message="the audit has no group attributes")]
    table = context.analyses["attribute_distribution"].get("attributes") or {}
    out = []
    for attribute in attributes:
        entry = table.get(attribute)
        if entry is None:
            out.append(Check(name, ERROR, None, threshold, attribute=attribute,
                             message=f"the audit has no attribute {attribute!r}: check representation.attributes"))
            continue
        rate = float(entry.get("missing_rate") or 0.0)
        status = _decide(rate, None, None, threshold, upper=True, margin=context.margin)
        out.append(Check(name, status, rate, threshold, attribute=attribute, group="<missing>",
                         message=f"{entry.get('n_missing', 0)} images without a value for {attribute} "
                                 f"(rate {_fmt(rate)}, limit {_fmt(threshold)})" + _explain(status)))
    return out


def _check_imbalance(context: _Context) -> Check:
    name = "representation.max_class_imbalance_ratio"
    threshold = context.policy.representation_max_class_imbalance_ratio
    missing = context.unavailable(name, "class_distribution", skip_reason="the audit has no class distribution")
    if missing:
        return Check(name, missing.status, None, threshold, message=missing.message)
    section = context.analyses["class_distribution"]
    ratio = section.get("imbalance_ratio")
    counts = section.get("counts") or {}
    if ratio is None:
        return Check(name, INSUFFICIENT_EVIDENCE, None, threshold, message="no imbalance ratio (empty classes?)")
    status = _decide(float(ratio), None, None, threshold, upper=True, margin=context.margin)
    # every class tied for the largest / smallest count is named; balanced data singles out no class
    extremes = tied_extremes(counts)
    largest, smallest = extremes["largest"], extremes["smallest"]
    if extremes["balanced"] or not smallest:
        text = f"classes balanced ({counts.get(smallest[0]) if smallest else 0} images each): ratio {_fmt(ratio)}"
    else:
        text = (f"largest class{'es' if len(largest) > 1 else ''} {join_names(largest, limit=3)} "
                f"({counts.get(largest[0])}{' each' if len(largest) > 1 else ''}) / smallest "
                f"{join_names(smallest, limit=3)} ({counts.get(smallest[0])}{' each' if len(smallest) > 1 else ''}) "
                f"= {_fmt(ratio)}")
    return Check(name, status, float(ratio), threshold, attribute="all", group="all",
                 class_=str(smallest[0]) if len(smallest) == 1 and not extremes["balanced"] else "",
                 message=f"{text}; limit {_fmt(threshold)}" + _explain(status))


def _check_association(context: _Context) -> list[Check]:
    name = "representation.max_association"
    threshold = context.policy.representation_max_association
    missing = context.unavailable(name, "associations", skip_reason="the audit has no class x attribute associations")
    if missing:
        return [Check(name, missing.status, None, threshold, message=missing.message)]
    attributes = [a for a in _attributes(context, context.policy.representation_attributes) if " & " not in a]
    if not attributes:
        return [Check(name, SKIPPED, None, threshold, message="the audit has no group attributes")]
    entries = {str(e.get("attribute")): e for e in context.analyses["associations"].get("attributes") or []}
    out = []
    for attribute in attributes:
        entry = entries.get(attribute)
        if entry is None:
            out.append(Check(name, ERROR, None, threshold, attribute=attribute,
                             message=f"the audit has no association for attribute {attribute!r}: check "
                                     f"representation.attributes"))
            continue
        value = entry.get("cramers_v")
        if value is None:
            out.append(Check(name, INSUFFICIENT_EVIDENCE, None, threshold, attribute=attribute,
                             message=f"Cramer's V of class x {attribute} is undefined (a single class or group)"))
            continue
        status = _decide(float(value), None, None, threshold, upper=True, margin=context.margin)
        p = entry.get("p_value_adjusted")
        message = (f"Cramer's V of class x {attribute} = {_fmt(value)} (adjusted p {_fmt(p, 2)}); limit "
                   f"{_fmt(threshold)}" + _explain(status))
        if entry.get("low_expected_counts"):
            message += "; some expected cell counts are low, so V is rough"
        out.append(Check(name, status, float(value), threshold, attribute=attribute, message=message))
    return out


# -- performance ---------------------------------------------------------------------------------------------
_NO_MODEL = "the audit has no model or predictions, so there is no performance by group"


def _check_performance(context: _Context, name: str, threshold: float) -> list[Check]:
    metric = context.policy.performance_metric
    missing = context.unavailable(name, "group_performance", skip_reason=_NO_MODEL)
    if missing:
        return [Check(name, missing.status, None, threshold, message=missing.message)]
    if context.rows(metric).empty:
        return [Check(name, SKIPPED, None, threshold,
                      message=f"the audit has no {metric} rows (e.g. top_k_accuracy / calibration need "
                              f"probabilities and enough classes)")]
    info = (context.audit.get("metrics") or {}).get(metric) or {}
    higher_is_better = info.get("higher_is_better")
    higher_is_better = True if higher_is_better is None else bool(higher_is_better)
    if name == "performance.min_worst_group":
        # higher-is-better metrics: every group must reach the threshold; lower-is-better (calibration
        # error): no group may exceed it.
        return _check_groups(context, name, "group_performance", metric, threshold, upper=not higher_is_better,
                             attributes=context.policy.performance_attributes, skip_reason=_NO_MODEL)
    attributes = _attributes(context, context.policy.performance_attributes)
    if not attributes:
        return [Check(name, SKIPPED, None, threshold, message="the audit has no group attributes")]
    out = []
    for attribute in attributes:
        rows = _judged_groups(context.rows(metric, attribute=attribute))
        if rows is None:
            out.append(Check(name, ERROR, None, threshold, attribute=attribute,
                             message=f"group_metrics.parquet has no {metric} rows for attribute {attribute!r}: "
                                     f"check the attribute name in the policy"))
            continue
        out.append(_disparity(name, rows, threshold, metric=metric, attribute=attribute,
                              higher_is_better=higher_is_better, margin=context.margin))
    return out


def _disparity(name: str, rows: pd.DataFrame, threshold: float, *, metric: str, attribute: str,
               higher_is_better: bool, margin: float) -> Check:
    """max_gap (largest - smallest value) or min_ratio (smallest / largest) between the judged groups."""
    judged = rows[~rows["insufficient_evidence"].astype(bool) & rows["value"].notna()]
    n_small = len(rows) - len(judged)
    if len(judged) < 2:
        return Check(name, INSUFFICIENT_EVIDENCE, None, threshold, attribute=attribute,
                     message=f"{len(judged)} of {len(rows)} groups of {attribute} have enough evidence for {metric}; "
                             f"a gap needs two")
    ranks = group_ranks(judged["group"].astype(str))
    ordered = judged.assign(_natural=judged["group"].astype(str).map(ranks)).sort_values(["value", "_natural"],
                                                                                         kind="mergesort")
    low_row, high_row = ordered.iloc[0], ordered.iloc[-1]
    worst, best = (low_row, high_row) if higher_is_better else (high_row, low_row)
    if name == "performance.max_gap":
        value = float(high_row["value"] - low_row["value"])
        low, high = _difference_interval(high_row, low_row)
        upper, what = True, "gap"
    else:
        value, (low, high) = _ratio(low_row, high_row)
        upper, what = False, "ratio"
    status = _decide(value, low, high, threshold, upper=upper, margin=margin)
    message = (f"{metric} {what} between {best['group']} {_fmt(best['value'])}{_ci(best['ci_low'], best['ci_high'])} "
               f"and {worst['group']} {_fmt(worst['value'])}{_ci(worst['ci_low'], worst['ci_high'])}: {_fmt(value)}"
               f"{_ci(low, high)}; limit {_fmt(threshold)}" + _explain(status))
    if n_small:
        message += f"; {n_small} groups too small or too uncertain to compare"
    return Check(name, status, value, threshold, attribute=attribute, group=str(worst["group"]), message=message)


def _difference_interval(a, b) -> tuple[float | None, float | None]:
    """Interval of ``a.value - b.value`` from the two stored intervals (MOVER, Newcombe 1998 / Zou 2008).

    ``L = d - sqrt((a - a_low)^2 + (b_high - b)^2)``, ``U = d + sqrt((a_high - a)^2 + (b - b_low)^2)``: with
    Wilson intervals this is Newcombe's hybrid score interval for a difference of independent proportions.
    """
    values = [a["value"], a["ci_low"], a["ci_high"], b["value"], b["ci_low"], b["ci_high"]]
    if any(_isnan(v) for v in values):
        return None, None
    av, al, ah, bv, bl, bh = map(float, values)
    d = av - bv
    return d - math.hypot(av - al, bh - bv), d + math.hypot(ah - av, bv - bl)


def _ratio(small, large) -> tuple[float | None, tuple]:
    """``small.value / large.value`` and its interval (MOVER on the log scale from the stored intervals)."""
    sv, lv = float(small["value"]), float(large["value"])
    if lv <= 0:
        return None, (None, None)
    value = sv / lv
    values = [small["ci_low"], small["ci_high"], large["ci_low"], large["ci_high"]]
    if any(_isnan(v) for v in values) or sv <= 0:
        return value, (None, None)
    sl, sh, ll, lh = map(float, values)
    if sl <= 0 or ll <= 0:
        return value, (None, None)
    d = math.log(sv) - math.log(lv)
    low = d - math.hypot(math.log(sv) - math.log(sl), math.log(lh) - math.log(lv))
    high = d + math.hypot(math.log(sh) - math.log(sv), math.log(lv) - math.log(ll))
    return value, (math.exp(low), math.exp(high))


# -- annotation (issue 16) -----------------------------------------------------------------------------------
_NO_ANNOTATIONS = "the audit has no annotations (give --annotations FILE to run or label-noise)"


def _check_min_agreement(context: _Context) -> list[Check]:
    """Krippendorff's alpha over all images, then per group of each attribute, must reach the threshold
    (judged on the bootstrap interval: an interval straddling it is INSUFFICIENT_EVIDENCE)."""
    name = "annotation.min_agreement"
    threshold = context.policy.annotation_min_agreement
    missing = context.unavailable(name, "annotations", skip_reason=_NO_ANNOTATIONS)
    if missing:
        return [Check(name, missing.status, None, threshold, message=missing.message)]
    rows = context.rows("annotation_agreement", attribute="all")
    rows = rows[rows["group"] == "all"] if not rows.empty else rows
    if rows.empty:
        return [Check(name, ERROR, None, threshold, attribute="all", group="all",
                      message="group_metrics.parquet has no overall annotation_agreement row")]
    row = rows.iloc[0]
    status = _decide(row["value"], row["ci_low"], row["ci_high"], threshold, upper=False, margin=context.margin,
                     insufficient=bool(row["insufficient_evidence"]))
    checks = [Check(name, status, _float(row["value"]), threshold, attribute="all", group="all",
                    message=f"Krippendorff's alpha {_fmt(row['value'])}{_ci(row['ci_low'], row['ci_high'])} over "
                            f"{int(row['n'])} images with two or more labels; minimum {_fmt(threshold)}"
                            + _explain(status))]
    if context.group_attributes or context.policy.annotation_attributes:
        checks.extend(_check_groups(context, name, "annotations", "annotation_agreement", threshold, upper=False,
                                    attributes=context.policy.annotation_attributes, skip_reason=_NO_ANNOTATIONS))
    return checks


def _check_annotator_error(context: _Context) -> Check:
    """Each annotator's error rate (1 - accuracy, with its interval) must stay at or below the threshold; the
    row names the worst annotator. Annotators with ``insufficient_data`` are undecided."""
    name = "annotation.max_annotator_error"
    threshold = context.policy.annotation_max_annotator_error
    missing = context.unavailable(name, "annotations", skip_reason=_NO_ANNOTATIONS)
    if missing:
        return Check(name, missing.status, None, threshold, message=missing.message)
    table = (context.analyses["annotations"] or {}).get("annotators") or []
    if not table:
        return Check(name, SKIPPED, None, threshold, attribute="annotator",
                     message="the audit lists no annotators")
    frame = pd.DataFrame(table)
    rows = pd.DataFrame({"group": frame["annotator"].astype(str), "class": "",
                         "value": 1 - frame["accuracy"].astype(float),
                         "ci_low": 1 - frame["ci_high"].astype(float), "ci_high": 1 - frame["ci_low"].astype(float),
                         "n": frame["n"].astype(int),
                         "insufficient_evidence": frame["verdict"].astype(str) == "insufficient_data"})
    return _summarise(name, rows, threshold, upper=True, margin=context.margin, what="annotator",
                      attribute="annotator")
