"""Regression checks of a release against a baseline: the policy's ``[regression]`` section.

``gate NEW --baseline OLD --policy FILE`` evaluates the usual checks on NEW and these on the comparison
OLD -> NEW (computed in memory). Statuses and exit codes are the gate's (contract). Keys:

- ``metric``: the model metric judged (default ``[performance] metric``, else ``accuracy``); one of
  :data:`REGRESSION_METRICS`.
- ``max_drop``: largest allowed drop (``old - new``) of the metric overall and in any group of the judged
  attributes (default: the primary attributes, the single metadata attributes). Judged on the 95 %
  interval of the drop: FAIL when its lower bound exceeds ``max_drop``, INSUFFICIENT_EVIDENCE when the
  interval straddles it (or either version has fewer than ``min_group_size`` images in the group), PASS
  (WARN within ``[gate] warn_margin``) when the whole interval is below.
- ``max_worst_group_drop``: largest allowed drop of the worst group's value (per attribute, groups with at
  least ``min_group_size`` images in both versions; the worst group may change between versions); judged on
  the interval the same way (the paired/unpaired interval of that group when it is worst in both versions,
  else Newcombe's unpaired interval of the two groups' proportions).
- ``max_gap_increase``: largest allowed growth of the gap (best group - worst group, same groups) per
  attribute; judged on the point estimate (no interval is computed for a difference of ranges).
- ``max_removed_share``: largest share of any OLD group's images that NEW removed; a count, not an
  estimate, so judged on the value itself.
"""
from __future__ import annotations

import math
import sys
from typing import TextIO

import numpy as np

from audit.errors import PolicyError
from audit.policy import (ERROR, FAIL, INSUFFICIENT_EVIDENCE, PASS, SKIPPED, WARN, Check, Verdict, exit_code,
                          overall_status, status_rank)

REGRESSION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
REGRESSION_KEYS = ("max_drop", "max_worst_group_drop", "max_gap_increase", "max_removed_share")
ERROR_REGRESSION_METRIC = ("policy file {path}: regression.metric {value!r} is not compared between audits; use one "
                           "of {allowed}")
MESSAGE_NO_MODEL = "no model comparison (one of the audits has no predictions), so there is no drop to judge"
MESSAGE_NO_ATTRIBUTE = "attribute {attribute!r} is not a group attribute of both audits ({available})"


def regression_policy(path) -> dict:
    """Read a policy file and return its ``[regression]`` section as a dict (with the resolved metric)."""
    from audit.policy import load_policy

    policy = load_policy(path)
    return regression_settings(policy, source=str(path))


def regression_settings(policy, *, source: str = "<policy>") -> dict:
    metric = policy.regression_metric or policy.performance_metric or "accuracy"
    if metric not in REGRESSION_METRICS:
        raise PolicyError(ERROR_REGRESSION_METRIC.format(path=source, value=metric,
                                                         allowed=", ".join(REGRESSION_METRICS)),
                          source=source, column="regression.metric")
    return {"metric": metric, "attributes": policy.regression_attributes, "warn_margin": policy.gate_warn_margin,
            **{key: getattr(policy, f"regression_{key}") for key in REGRESSION_KEYS}}


def _fmt(value) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{100 * value:.1f}"
    return f"{'0.0' if text == '-0.0' else text} points"  # no "drop -0.0 points"


def _decide_upper(value, low, high, threshold, margin, insufficient=False) -> str:
    if insufficient or value is None or not math.isfinite(value):
        return INSUFFICIENT_EVIDENCE
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        if low > threshold:
            return FAIL
        if high > threshold:
            return INSUFFICIENT_EVIDENCE
    elif value > threshold:
        return FAIL
    return WARN if value > threshold - margin else PASS




def _worst(candidates: list[tuple]) -> tuple:
    """The deciding candidate: worst status, then the largest value."""
    return sorted(candidates, key=lambda c: (status_rank(c[0]), -(c[1] if c[1] is not None and math.isfinite(c[1])
                                                             else -np.inf)))[0]


def evaluate_regression(comparison: dict, settings: dict) -> list[Check]:
    """The ``[regression]`` checks on a comparison (``comparison.json`` content)."""
    checks: list[Check] = []
    asked = [key for key in REGRESSION_KEYS if settings.get(key) is not None]
    if not asked:
        return checks
    metric = settings["metric"]
    margin = float(settings.get("warn_margin") or 0.0)
    model = comparison["model"]
    available = list(comparison["data"].get("attributes") or [])
    attributes = list(settings.get("attributes") or available)
    unknown = [a for a in attributes if a not in available]
    higher = metric in REGRESSION_METRICS
    rows = [r for r in model.get("rows", []) if r["metric"] == metric and r["class"] == ""]
    min_n = comparison["settings"]["min_group_size"]

    for key in asked:
        name = f"regression.{key}"
        threshold = float(settings[key])
        if unknown:
            checks.append(Check(name, ERROR, None, threshold, attribute=unknown[0],
                                message=MESSAGE_NO_ATTRIBUTE.format(attribute=unknown[0],
                                                                    available=", ".join(available) or "none")))
            continue
        if key == "max_removed_share":
            shares = [s for s in comparison["data"]["group_shares"] if s["attribute"] in attributes
                      and s["removed_share"] is not None and s["group"] != "<missing>"]
            if not shares:
                checks.append(Check(name, PASS, 0.0, threshold, message="no group of the judged attributes in OLD"))
                continue
            top = max(shares, key=lambda s: s["removed_share"])
            value = top["removed_share"]
            status = FAIL if value > threshold else (WARN if value > threshold - margin else PASS)
            over = [s for s in shares if s["removed_share"] > threshold]
            checks.append(Check(name, status, value, threshold, attribute=top["attribute"], group=top["group"],
                                message=f"NEW removed {top['n_removed']} of OLD's {top['n_old']} images of "
                                        f"{top['attribute']} = {top['group']} ({100 * value:.1f} %)"
                                        + (f"; {len(over)} group(s) over the limit" if over else "")))
            continue
        if model.get("method") in (None, "none") or not rows:
            checks.append(Check(name, SKIPPED, None, threshold, message=MESSAGE_NO_MODEL))
            continue
        sign = 1.0 if higher else -1.0
        if key == "max_drop":
            candidates = []
            for r in rows:
                if r["attribute"] != "all" and r["attribute"] not in attributes:
                    continue
                if r["group"] == "<missing>":
                    continue
                drop = -sign * r["difference"] if r["difference"] is not None else None
                low = -sign * (r["ci_high"] if higher else r["ci_low"]) if r["ci_high"] is not None else None
                high = -sign * (r["ci_low"] if higher else r["ci_high"]) if r["ci_low"] is not None else None
                small = min(r["n_old"], r["n_new"]) < min_n
                status = _decide_upper(drop, low, high, threshold, margin, insufficient=small)
                candidates.append((status, drop, low, high, r))
            status, drop, low, high, r = _worst(candidates)
            where = "overall" if r["attribute"] == "all" else f"{r['attribute']} = {r['group']}"
            checks.append(Check(name, status, drop, threshold, attribute=r["attribute"], group=r["group"],
                                message=f"{metric} {where}: {_pct(r['old'])} -> {_pct(r['new'])}, drop {_fmt(drop)} "
                                        f"(95 % CI {_fmt(low)} to {_fmt(high)}, {r['method']}, n = {r['n_new']})"
                                        + _explain(status)))
        elif key in ("max_worst_group_drop", "max_gap_increase"):
            candidates = []
            for attribute in attributes:
                group_rows = [r for r in rows if r["attribute"] == attribute and r["group"] != "<missing>"
                              and min(r["n_old"], r["n_new"]) >= min_n]
                if len(group_rows) < 2:
                    candidates.append((INSUFFICIENT_EVIDENCE, None, None, None, attribute,
                                       f"fewer than two groups of {attribute} hold {min_n} images in both versions"))
                    continue
                pick = min if higher else max
                worst_old = pick(group_rows, key=lambda r: r["old"])
                worst_new = pick(group_rows, key=lambda r: r["new"])
                if key == "max_worst_group_drop":
                    drop = sign * (worst_old["old"] - worst_new["new"])
                    if worst_old is worst_new:
                        low = -sign * (worst_new["ci_high"] if higher else worst_new["ci_low"])
                        high = -sign * (worst_new["ci_low"] if higher else worst_new["ci_high"])
                    else:
                        low, high = _unpaired_drop(worst_old["old"], worst_old["n_old"], worst_new["new"],
                                                   worst_new["n_new"], sign)
                    status = _decide_upper(drop, low, high, threshold, margin)
                    text = (f"worst group of {attribute}: {worst_old['group']} {_pct(worst_old['old'])} in OLD, "
                            f"{worst_new['group']} {_pct(worst_new['new'])} in NEW; drop {_fmt(drop)} "
                            f"(95 % CI {_fmt(low)} to {_fmt(high)})")
                    candidates.append((status, drop, low, high, attribute, text + _explain(status)))
                else:
                    gap_old = max(r["old"] for r in group_rows) - min(r["old"] for r in group_rows)
                    gap_new = max(r["new"] for r in group_rows) - min(r["new"] for r in group_rows)
                    increase = gap_new - gap_old
                    status = FAIL if increase > threshold else (WARN if increase > threshold - margin else PASS)
                    candidates.append((status, increase, None, None, attribute,
                                       f"gap between the groups of {attribute}: {_fmt(gap_old)} in OLD, "
                                       f"{_fmt(gap_new)} in NEW (point estimates)"))
            status, value, low, high, attribute, text = _worst(candidates)
            checks.append(Check(name, status, value, threshold, attribute=attribute, message=text))
    return checks


def _unpaired_drop(old_value, n_old, new_value, n_new, sign):
    from audit.compare.stats import unpaired_difference_interval

    _, low, high = unpaired_difference_interval(round(old_value * n_old), n_old, round(new_value * n_new), n_new)
    return float(-sign * high), float(-sign * low)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _explain(status: str) -> str:
    if status == INSUFFICIENT_EVIDENCE:
        return "; the interval straddles the limit or the group is too small to decide"
    return ""


def record_regression(comparison: dict, settings: dict, *, policy_file=None) -> dict:
    """Return ``comparison`` with ``verdict`` (the regression checks) and ``policy`` added."""
    checks = evaluate_regression(comparison, settings)
    verdict = Verdict(status=overall_status(checks), checks=tuple(checks))
    out = dict(comparison)
    out["verdict"] = verdict.to_dict()
    out["policy"] = {"file": None if policy_file is None else str(policy_file), "regression": {
        k: v for k, v in settings.items() if v is not None and k != "warn_margin"}}
    return out


ERROR_BASELINE_SAME = "--baseline {path} is the audit being gated: give the earlier (baseline) audit"


def run_baseline_gate(new, *, baseline, policy_file, output_format: str = "text", json_file=None,
                      strict: bool = False, stream: TextIO | None = None) -> int:
    """``gate NEW --baseline OLD --policy FILE``: NEW's own checks plus the ``[regression]`` checks."""
    import os

    from audit.compare.core import compare_audits
    from audit.compare.folder import load_pair
    from audit.errors import InputError
    from audit.gate import (ERROR_JSON_IS_DIR, ERROR_JSON_NOT_WRITABLE, MESSAGE_VERDICT_ERROR, render_gate_markdown,
                            render_gate_text)
    from audit.policy import evaluate_policy, load_policy

    if json_file is not None and os.path.isdir(json_file):
        raise InputError(ERROR_JSON_IS_DIR.format(path=json_file), source=str(json_file))
    policy = load_policy(policy_file)
    settings = regression_settings(policy, source=str(policy_file))
    old_folder, new_folder = load_pair(baseline, new)
    from audit.gate import review_status

    own = evaluate_policy(new_folder.audit, new_folder.group_metrics, policy, strict=strict,
                          reviews=review_status(new, policy))
    comparison = compare_audits(old_folder, new_folder, primary_metric=settings["metric"]).comparison
    own_checks = tuple(c for c in own.checks if not c.name.startswith("regression."))  # SKIPPED placeholders
    checks = own_checks + tuple(evaluate_regression(comparison, settings))
    verdict = Verdict(status=overall_status(checks, strict=strict), checks=checks, strict=strict)
    render = render_gate_markdown if output_format == "md" else render_gate_text
    text = render(verdict, folder=f"{new} (baseline {baseline})", policy_file=str(policy_file))
    print(text, file=stream or sys.stdout)
    if json_file is not None:
        from audit.io.atomic import write_json_atomic

        try:
            write_json_atomic(json_file, verdict.to_dict())
        except OSError as error:
            raise InputError(ERROR_JSON_NOT_WRITABLE.format(path=json_file,
                                                            reason=error.strerror or type(error).__name__),
                             source=str(json_file)) from error
    if verdict.status == ERROR:
        errors = [c for c in verdict.checks if c.status == ERROR]
        first = errors[0]
        print(MESSAGE_VERDICT_ERROR.format(folder=new, n=len(errors), name=first.name,
                                           message=" ".join(str(first.message).split())), file=sys.stderr)
    return exit_code(verdict.status)
