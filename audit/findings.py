"""Plain-sentence findings, most important first, composed from computed results only.

Every number in a sentence is read from an analysis result or from ``group_metrics``; nothing here computes
a statistic of its own beyond choosing and ordering what to say.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}
METRIC_NAMES = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro-F1",
                "expected_calibration_error": "Calibration error", "estimated_noise_rate": "The estimated label-noise rate"}


def percent(value: float | None, digits: int = 1) -> str:
    """``0.6523`` -> ``'65.2 %'``; None -> ``'n/a'``."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{100 * value:.{digits}f} %"


def _interval(row) -> str:
    return f"95 % CI {100 * row.ci_low:.1f}-{100 * row.ci_high:.1f} %"


def _finding(analysis: str, severity: str, text: str, weight: float = 0.0) -> dict:
    return {"analysis": analysis, "severity": severity, "text": text, "weight": float(weight)}


def _performance_findings(group_metrics: pd.DataFrame) -> list[dict]:
    found = []
    rows = group_metrics[(group_metrics["metric"] == "accuracy") & (group_metrics["class"] == "")]
    overall = rows[rows["attribute"] == "all"]
    if overall.empty:
        return found
    overall_value = float(overall["value"].iloc[0])
    worse = rows[rows["verdict"] == "worse_than_rest"].copy()
    worse["gap"] = overall_value - worse["value"]
    worse["is_intersection"] = worse["attribute"].str.contains(" & ", regex=False)
    worse["is_pixel"] = worse["attribute"].str.startswith("image_")
    worse = worse.sort_values(["is_intersection", "is_pixel", "gap"], ascending=[True, True, False])
    flagged_singles = {(a, g) for a, g in zip(worse["attribute"], worse["group"]) if " & " not in a}
    n_reported = {"single": 0, "intersection": 0}
    for row in worse.itertuples():
        if row.is_intersection:
            # An intersection whose parts are already reported adds little: say it only when it is new.
            parts = list(zip(row.attribute.split(" & "), row.group.split(" & ")))
            if any(part in flagged_singles for part in parts) or n_reported["intersection"] >= 2:
                continue
            n_reported["intersection"] += 1
        else:
            if n_reported["single"] >= 4:
                continue
            n_reported["single"] += 1
        found.append(_finding(
            "group_performance", "high",
            f"Accuracy is {percent(row.value)} ({_interval(row)}, n = {row.n}) for {row.attribute} = {row.group}, "
            f"against {percent(overall_value)} overall: significantly worse than the rest of the data.",
            weight=3 + row.gap - 0.5 * row.is_intersection - 0.2 * row.is_pixel))
    tested = rows[(rows["attribute"] != "all") & (rows["verdict"] != "")]
    if worse.empty and len(tested):
        sufficient = tested[~tested["insufficient_evidence"]]
        text = (f"No group's accuracy is significantly below the rest of the data ({len(tested)} groups tested, "
                f"{int(tested['insufficient_evidence'].sum())} too small or too uncertain to judge).")
        if len(sufficient):
            lowest = sufficient.sort_values("value").iloc[0]
            text += (f" The lowest judged group is {lowest['attribute']} = {lowest['group']} at "
                     f"{percent(lowest['value'])} against {percent(overall_value)} overall.")
        found.append(_finding("group_performance", "info", text, weight=0.5))
    small = rows[(rows["attribute"] != "all") & rows["insufficient_evidence"] & (~rows["attribute"].str.contains(" & "))]
    small = small.assign(is_pixel=small["attribute"].str.startswith("image_")).sort_values(["is_pixel", "n"])
    if len(small):
        found.append(_finding(
            "group_performance", "medium",
            f"{len(small)} single-attribute groups are too small (under the minimum group size) or too uncertain "
            f"for a verdict on accuracy, e.g. {small.iloc[0]['attribute']} = {small.iloc[0]['group']} "
            f"(n = {int(small.iloc[0]['n'])}).", weight=1.0))
    return found


def _label_noise_findings(section: dict, group_metrics: pd.DataFrame, classes) -> list[dict]:
    found = []
    rate = section.get("noise_rate")
    if rate is None:
        return found
    interval = section.get("noise_rate_ci") or [None, None]
    text = (f"An estimated {percent(rate)} of labels are wrong"
            + (f" (95 % CI {percent(interval[0])}-{percent(interval[1])})" if interval[0] is not None else "")
            + f"; {section.get('n_label_issues', 0)} images are flagged as likely mislabelled"
            + f" (source: {section.get('source', 'model')} probabilities).")
    per_class = section.get("per_class") or []
    if per_class:
        worst = max(per_class, key=lambda c: c.get("noise_rate") or 0)
        if worst.get("noise_rate"):
            text += f" The class with the highest estimated rate is {worst.get('class')} ({percent(worst['noise_rate'])})."
    found.append(_finding("label_noise", "high" if rate >= 0.05 else "medium" if rate >= 0.01 else "info", text,
                          weight=2 + 10 * rate))
    accuracy = group_metrics[(group_metrics["metric"] == "accuracy") & (group_metrics["attribute"] == "all")
                             & (group_metrics["class"] == "")]
    if section.get("source") == "model" and len(accuracy) and float(accuracy["value"].iloc[0]) < 0.9:
        found.append(_finding(
            "label_noise", "high" if rate >= 0.05 else "medium",
            f"The model behind the label-noise estimate is {percent(float(accuracy['value'].iloc[0]))} accurate, so "
            f"many flagged images may be model errors rather than wrong labels: review the suspects before "
            f"relying on the rate.", weight=2 + 10 * rate - 0.01))
    rows = group_metrics[(group_metrics["metric"] == "estimated_noise_rate") & (group_metrics["verdict"] == "worse_than_rest")
                         & (group_metrics["class"] == "")].copy()
    rows["is_intersection"] = rows["attribute"].str.contains(" & ", regex=False)
    rows = rows.sort_values(["is_intersection", "value"], ascending=[True, False])
    for row in rows.head(3).itertuples():
        found.append(_finding("label_noise", "high",
                              f"Labels look noisier for {row.attribute} = {row.group}: {percent(row.value)} flagged "
                              f"({_interval(row)}, n = {row.n}), significantly more than in the rest of the data.",
                              weight=2.5 + row.value - 0.5 * row.is_intersection))
    return found


def _composition_findings(sections: dict) -> list[dict]:
    found = []
    classes = sections.get("class_distribution")
    if classes:
        ratio = classes.get("imbalance_ratio")
        if ratio and ratio >= 1.5:
            counts = classes["counts"]
            found.append(_finding(
                "class_distribution", "medium" if ratio >= 3 else "low",
                f"Classes are imbalanced: {classes['largest_class']} has {counts[classes['largest_class']]} images, "
                f"{ratio:.1f}x as many as {classes['smallest_class']} ({counts[classes['smallest_class']]}).",
                weight=1 + min(ratio, 10) / 10))
        shift = classes.get("split_shift")
        if shift and shift.get("p_value") is not None and shift["p_value"] < 0.05:
            found.append(_finding("class_distribution", "medium",
                                  f"The class mix differs between splits (chi-square p = {shift['p_value']:.2g}, "
                                  f"Cramer's V = {shift['cramers_v']:.2f}).", weight=1.2))
    attributes = (sections.get("attribute_distribution") or {}).get("attributes", {})
    for name, entry in attributes.items():
        if name.startswith("image_"):
            continue
        small = [g for g in entry["groups"] if g["is_small"] and g["group"] != "<missing>"]
        if small:
            smallest = min(small, key=lambda g: g["n"])
            found.append(_finding("attribute_distribution", "medium",
                                  f"{len(small)} of {entry['n_groups']} groups of {name} have fewer images than the "
                                  f"minimum group size; the smallest is {name} = {smallest['group']} "
                                  f"({smallest['n']} images).", weight=1.1))
        if entry.get("missing_rate", 0) > 0:
            found.append(_finding("attribute_distribution", "medium" if entry["missing_rate"] > 0.05 else "low",
                                  f"{percent(entry['missing_rate'])} of images have no value for {name}.", weight=0.9))
        reference = entry.get("reference")
        if reference and reference.get("p_value") is not None and reference["p_value"] < 0.05:
            off = [r for r in reference["rows"] if r["outside_interval"]]
            detail = ", ".join(f"{r['group']} {percent(r['observed_share'])} vs {percent(r['expected_share'])}"
                               for r in off[:3])
            found.append(_finding("attribute_distribution", "medium",
                                  f"The distribution of {name} differs from the reference (p = {reference['p_value']:.2g})"
                                  + (f": {detail}." if detail else "."), weight=1.3))
    associations = (sections.get("associations") or {}).get("attributes", [])
    for entry in associations:
        if not entry.get("significant") or entry["attribute"].startswith("image_"):
            continue
        cells = [c for c in entry.get("cells", []) if c.get("significant") and c["direction"] == "over"]
        text = (f"The class label is associated with {entry['attribute']} (Cramer's V = {entry['cramers_v']:.2f}, "
                f"adjusted p = {entry['p_value_adjusted']:.2g})")
        if cells:
            c = cells[0]
            text += (f": {c['class']} is over-represented in {entry['attribute']} = {c['group']} "
                     f"({c['observed']} images, {c['ratio']:.1f}x the count expected under independence)")
        found.append(_finding("associations", "medium", text + ".", weight=1 + entry["cramers_v"]))
    strong_pixel = [e for e in associations if e.get("significant") and e["attribute"].startswith("image_")
                    and (e.get("cramers_v") or 0) >= 0.2]
    for entry in strong_pixel[:2]:
        found.append(_finding("associations", "low",
                              f"The class label is associated with the pixel attribute {entry['attribute']} "
                              f"(Cramer's V = {entry['cramers_v']:.2f}): a model may learn it as a shortcut.",
                              weight=0.8 + entry["cramers_v"]))
    return found


def slices_tried(sections: dict) -> int:
    return int((sections.get("weak_slices") or {}).get("n_tried", 0))


def compose_findings(sections: dict, group_metrics: pd.DataFrame, *, n_skipped: int | None = None,
                     classes=()) -> list[dict]:
    """Findings as ``{"analysis", "severity", "text", "weight"}``, most important first."""
    found = []
    found += _performance_findings(group_metrics)
    if "label_noise" in sections:
        found += _label_noise_findings(sections["label_noise"], group_metrics, classes)
    found += _composition_findings(sections)
    slices = (sections.get("weak_slices") or {}).get("slices", [])
    already = " ".join(f["text"] for f in found if f["analysis"] == "group_performance")
    reported = 0
    for entry in slices:
        name = f"{entry.get('attribute')} = {entry.get('group')}"
        if name in already or reported >= 3:
            continue  # the per-group test already said it
        reported += 1
        found.append(_finding("weak_slices", "high",
                              f"Weak slice found by searching attribute combinations: {name} ({entry.get('n')} "
                              f"images) has accuracy {percent(entry.get('accuracy'))} against "
                              f"{percent(entry.get('rest_accuracy'))} for the rest (adjusted p = "
                              f"{entry.get('p_value_adjusted', float('nan')):.2g}, {slices_tried(sections)} slices tried).",
                              weight=2.8))
    for entry in (sections.get("annotations") or {}).get("findings", []):
        found.append(_finding("annotations", entry["severity"], entry["text"], weight=entry.get("weight", 1.0)))
    for text in (sections.get("data_quality") or {}).get("findings", [])[:5]:
        found.append(_finding("data_quality", "medium", text, weight=1.0))
    if n_skipped:
        found.append(_finding("skipped", "medium", f"{n_skipped} inputs were skipped; see the list of skipped inputs.",
                              weight=1.5))
    found.sort(key=lambda f: (SEVERITY_ORDER[f["severity"]], -f["weight"]))
    return found
