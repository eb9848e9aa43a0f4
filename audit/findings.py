"""Plain-sentence findings, most important first, composed from computed results only.

Every number in a sentence is read from an analysis result or from ``group_metrics``; nothing here computes
a statistic of its own beyond choosing and ordering what to say.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from audit.display import attribute_label, group_ranks, join_names, sort_groups, tied_extremes

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}
METRIC_NAMES = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro-F1",
                "expected_calibration_error": "Calibration error",
                "label_disagreement_rate": "The model-label disagreement rate", "model_error_rate": "The model error rate"}


def percent(value: float | None, digits: int = 1) -> str:
    """``0.6523`` -> ``'65.2 %'``; None -> ``'n/a'``."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{100 * value:.{digits}f} %"


def _interval(row) -> str:
    return f"95 % CI {100 * row.ci_low:.1f}-{100 * row.ci_high:.1f} %"


def _finding(analysis: str, severity: str, text: str, weight: float = 0.0) -> dict:
    return {"analysis": analysis, "severity": severity, "text": text, "weight": float(weight)}


#: Metrics that are proportions of images (a Newcombe interval applies to their gap against the rest).
PROPORTION_METRICS = ("accuracy", "top_k_accuracy", "recall", "precision")
#: Harmful rates (higher is worse) with a readable name.
RATE_NAMES = {"label_disagreement_rate": "the model-label disagreement rate",
              "model_error_rate": "the model error rate"}
#: Said after a disagreement-rate lead: the error rate of the same probabilities on the same images.
LEAD_DISAGREEMENT_ERROR = " (a screening figure: the model's error rate on the same images is {error_rate})"
#: Severity of a primary finding: ``high`` when the whole interval of the gap is at least this large.
HIGH_SEVERITY_MIN_GAP = 0.05


def _metric_name(metric: str) -> str:
    if metric.startswith("issue_rate:"):
        return f"the rate of {metric.split(':', 1)[1].replace('_', ' ')} images"
    return RATE_NAMES.get(metric, METRIC_NAMES.get(metric, metric.replace("_", " ")))


def _column(frame: pd.DataFrame, name: str, default):
    return frame[name] if name in frame.columns else pd.Series(default, index=frame.index)


def _gap_interval(row, all_n: float | None, *, harmful_higher: bool):
    """Gap (harmful direction, positive = worse than the rest) and its Newcombe interval, for proportions."""
    from audit.analysis._stats import newcombe_difference_interval

    rest_value = getattr(row, "rest_value", np.nan)
    if not np.isfinite(rest_value):
        return np.nan, np.nan, np.nan
    gap = (row.value - rest_value) if harmful_higher else (rest_value - row.value)
    if all_n is None or not np.isfinite(all_n) or all_n <= row.n or row.metric not in PROPORTION_METRICS:
        return gap, np.nan, np.nan
    rest_n = all_n - row.n
    d, low, high = newcombe_difference_interval(round(row.value * row.n), row.n, round(rest_value * rest_n), rest_n)
    if harmful_higher:
        return float(d), float(low), float(high)
    return float(-d), float(-high), float(-low)


def tests_made_text(multiplicity: dict) -> str:
    """One sentence: how many tests the audit made and how each family was controlled."""
    families = multiplicity.get("families", {})
    primary = families.get("primary", {})
    exploratory = families.get("exploratory", {})
    alpha = f"{100 * multiplicity.get('alpha', 0.05):.0f} %"
    method = "Holm" if primary.get("method", "holm") == "holm" else "Benjamini-Hochberg"
    return (f"This audit made {multiplicity.get('n_tests', 0)} tests of a group against the rest of the data: "
            f"{primary.get('n_tests', 0)} primary ({_metric_name(multiplicity.get('primary_metric', 'accuracy')).lower()} "
            f"of each group of each metadata attribute; {primary.get('controls', 'family-wise error rate')} at "
            f"most {alpha} by {method}), {primary.get('n_worse_than_rest', 0)} worse than the rest; and "
            f"{exploratory.get('n_tests', 0)} exploratory (other metrics, classes, intersections, pixel "
            f"attributes, label-disagreement and data-quality rates; false discovery rate at most {alpha} by "
            f"Benjamini-Hochberg), {exploratory.get('n_worse_than_rest', 0)} worse than the rest, reported as "
            f"leads to check, not conclusions.")


def _performance_findings(group_metrics: pd.DataFrame, multiplicity: dict | None = None) -> list[dict]:
    """Headline findings: the primary rows (single metadata attribute x the performance metric) that are
    worse than the rest after family-wise control over all primary rows of the audit."""
    found = []
    multiplicity = multiplicity or {}
    metric = multiplicity.get("primary_metric", "accuracy")
    name = METRIC_NAMES.get(metric, metric)
    rows = group_metrics[(group_metrics["metric"] == metric) & (group_metrics["class"] == "")]
    overall = rows[rows["attribute"] == "all"]
    if overall.empty:
        return found
    overall_value = float(overall["value"].iloc[0])
    all_n = float(overall["n"].iloc[0])
    scope = _column(rows, "scope", "")
    primary = rows[scope == "primary"]
    worse = primary[primary["verdict"] == "worse_than_rest"].copy()
    n_primary = int(multiplicity.get("families", {}).get("primary", {}).get("n_tests", len(primary)))
    method = multiplicity.get("families", {}).get("primary", {}).get("method", "holm")
    method_word = "Holm" if method == "holm" else "Benjamini-Hochberg"
    entries = []
    for row in worse.itertuples():
        gap, low, high = _gap_interval(row, all_n, harmful_higher=False)
        entries.append((row, gap, low, high))
    entries.sort(key=lambda e: -(e[2] if np.isfinite(e[2]) else e[1]))
    for row, gap, low, high in entries:
        gap_text = f"{100 * gap:.1f} points worse" if np.isfinite(gap) else "worse"
        if np.isfinite(low):
            gap_text += f" (95 % CI {100 * low:.1f} to {100 * high:.1f} points)"
        severe = np.isfinite(low) and low >= HIGH_SEVERITY_MIN_GAP or (not np.isfinite(low) and gap >= 0.1)
        found.append(_finding(
            "group_performance", "high" if severe else "medium",
            f"{name} is {percent(row.value)} ({_interval(row)}, n = {row.n}) for {attribute_label(row.attribute)} = "
            f"{row.group}, "
            f"against {percent(getattr(row, 'rest_value', np.nan))} for the rest of the data: {gap_text}; "
            f"adjusted p = {row.p_adjusted:.2g} ({method_word} over {n_primary} primary tests).",
            weight=3 + (gap if np.isfinite(gap) else 0)))
    judged = primary[~primary["insufficient_evidence"]]
    if worse.empty and len(primary):
        text = (f"No group's {name.lower()} is significantly below the rest of the data ({len(judged)} groups of "
                f"metadata attributes tested together, {method_word}-adjusted; "
                f"{int(primary['insufficient_evidence'].sum())} too small to judge).")
        if len(judged):
            lowest = _natural_order(judged, ["value"]).iloc[0]
            text += (f" The lowest judged group is {attribute_label(lowest['attribute'])} = {lowest['group']} at "
                     f"{percent(lowest['value'])} against {percent(overall_value)} overall.")
        found.append(_finding("group_performance", "info", text, weight=0.5))
    small = rows[(rows["attribute"] != "all") & rows["insufficient_evidence"] & (~rows["attribute"].str.contains(" & "))]
    small = _natural_order(small.assign(is_pixel=small["attribute"].str.startswith("image_")), ["is_pixel", "n"])
    if len(small):
        found.append(_finding(
            "group_performance", "medium",
            f"{len(small)} single-attribute groups are too small (under the minimum group size, or too few "
            f"images for an interval narrower than the maximum width) for a verdict on {name.lower()}, e.g. "
            f"{attribute_label(small.iloc[0]['attribute'])} = {small.iloc[0]['group']} "
            f"(n = {int(small.iloc[0]['n'])}).",
            weight=1.0))
    return found


def _natural_order(frame: pd.DataFrame, by: list) -> pd.DataFrame:
    """``frame`` sorted by ``by``, ties in the natural order of the groups (``0-2`` before ``10-19``)."""
    ranks = group_ranks(frame["group"])
    return (frame.assign(_group_rank=frame["group"].map(ranks))
            .sort_values(list(by) + ["_group_rank"], kind="mergesort").drop(columns="_group_rank"))


def _lead_findings(group_metrics: pd.DataFrame, multiplicity: dict | None, *, max_leads: int = 6) -> list[dict]:
    """Exploratory rows worse than the rest (false discovery rate controlled over all of them): leads, with
    their adjusted p-values, smallest first. Data-quality rates are said by the data-quality leads; rows
    whose groups contain a flagged primary group restate a headline finding and are left out."""
    if "scope" not in group_metrics.columns:
        return []
    rows = group_metrics[(group_metrics["scope"] == "exploratory") & (group_metrics["verdict"] == "worse_than_rest")
                         & ~group_metrics["metric"].str.startswith("issue_rate:")]
    if rows.empty:
        return []
    n_exploratory = int((multiplicity or {}).get("families", {}).get("exploratory", {}).get("n_tests", 0))
    primary_worse = group_metrics[(group_metrics["scope"] == "primary")
                                  & (group_metrics["verdict"] == "worse_than_rest")]
    flagged_primary = set(zip(primary_worse["attribute"], primary_worse["group"]))
    rows = rows.assign(is_intersection=rows["attribute"].str.contains(" & ", regex=False),
                       is_class=rows["class"] != "")
    rows = rows.sort_values(["p_adjusted", "is_intersection", "is_class"], kind="mergesort")
    found = []
    seen = set()
    error_rows = group_metrics[group_metrics["metric"] == "model_error_rate"]
    errors = {(a, g, c): v for a, g, c, v in zip(error_rows["attribute"], error_rows["group"], error_rows["class"],
                                                  error_rows["value"])}
    for row in rows.to_dict("records"):
        if len(found) >= max_leads:
            break
        parts = set(zip(row["attribute"].split(" & "), row["group"].split(" & ")))
        if parts & flagged_primary:
            continue
        key = (row["attribute"], row["group"], row["class"])
        if key in seen:
            continue  # one lead per group (accuracy, balanced accuracy and macro-F1 move together)
        seen.add(key)
        higher_is_worse = row["metric"] in RATE_NAMES or row["metric"] == "expected_calibration_error"
        where = f"{attribute_label(row['attribute'])} = {row['group']}" if row["attribute"] != "all" else "all images"
        if row["class"]:
            where += f", class {row['class']}"
        confound = ""
        if row["metric"] == "label_disagreement_rate" and key in errors:
            # the confound beside every disagreement rate (issue 13): the scorer's error on the same images
            confound = LEAD_DISAGREEMENT_ERROR.format(error_rate=percent(errors[key]))
        # no rest value (e.g. an annotator's agreement has no "rest of the data"): no "against n/a"
        rest_value = row.get("rest_value")
        rest = (f" against {percent(rest_value)} for the rest of the data "
                f"({'higher' if higher_is_worse else 'lower'})"
                if rest_value is not None and np.isfinite(rest_value) else "")
        found.append(_finding(
            "exploratory", "low",
            f"Lead (exploratory): {_metric_name(row['metric'])} is {percent(row['value'])} for {where} "
            f"(n = {row['n']}){rest}{confound}; adjusted p = {row['p_adjusted']:.2g} (false "
            f"discovery rate over {n_exploratory} exploratory tests). Check it on new data before acting on it.",
            weight=0.9 - 0.01 * len(found)))
    return found


#: The label-quality finding (issue 13): what confident learning measures is disagreement between the
#: probabilities and the given label, never "X % of labels are wrong"; the scorer's error rate on the same
#: images stands beside it (the confound), whatever the source of the probabilities.
FINDING_DISAGREEMENT = ("{subject} confidently disagrees with the given label on {rate} of images (a screening "
                        "figure, not a label-error rate{interval}; {n_flagged} images flagged).")
FINDING_DISAGREEMENT_ERROR = (" {possessive} error rate on the same images is {error_rate}: where {pronoun} is wrong "
                              "the label is flagged too, so only a review of a random sample can tell how many "
                              "labels are wrong.")
FINDING_DISAGREEMENT_NO_ERROR = (" {possessive} error rate on these images is not recorded; its own mistakes are "
                                 "flagged too, so only a review of a random sample can tell how many labels are wrong.")
FINDING_AUDITED_MODEL_ERROR = " The audited model's own error rate on these images is {error_rate}."
FINDING_DISAGREEMENT_CLASS = (" The class with the highest disagreement rate is {klass} ({rate}; {possessive_lower} "
                              "error rate on it {error_rate}).")
#: Who "disagrees", by ``analyses.label_noise.source``: (subject, possessive).
SOURCE_WORDS = {
    "model": ("The model", "The model's"),
    "predictions": ("The model", "The model's"),
    "probe": ("A probe on the model's embeddings", "The probe's"),
    "combined": ("The combination of the model and a probe on its embeddings", "The combination's"),
}


def source_words(source: str | None) -> tuple[str, str]:
    """(subject, possessive) naming the scorer behind the disagreement rate."""
    return SOURCE_WORDS.get(str(source or "model"), SOURCE_WORDS["model"])


def disagreement_sentence(section: dict) -> str | None:
    """The one sentence every view uses for ``analyses.label_noise`` (findings, report, CLI summary)."""
    rate = section.get("label_disagreement_rate")
    if rate is None:
        return None
    subject, possessive = source_words(section.get("source"))
    interval = section.get("label_disagreement_rate_ci") or [None, None]
    text = FINDING_DISAGREEMENT.format(
        subject=subject, rate=percent(rate), n_flagged=f"{int(section.get('n_label_issues') or 0):,}",
        interval=(f"; 95 % CI {percent(interval[0])}-{percent(interval[1])}" if interval[0] is not None else ""))
    error = section.get("model_error_rate")
    if error is not None:
        text += FINDING_DISAGREEMENT_ERROR.format(possessive=possessive, error_rate=percent(error), pronoun="it")
    else:
        text += FINDING_DISAGREEMENT_NO_ERROR.format(possessive=possessive)
    audited = section.get("audited_model_error_rate")
    if audited is not None and str(section.get("source") or "model") not in ("model", "predictions"):
        text += FINDING_AUDITED_MODEL_ERROR.format(error_rate=percent(audited))
    return text


def _label_noise_findings(section: dict, group_metrics: pd.DataFrame, classes) -> list[dict]:
    found = []
    text = disagreement_sentence(section)
    if text is None:
        return found
    rate = float(section["label_disagreement_rate"])
    per_class = [c for c in (section.get("per_class") or []) if c.get("label_disagreement_rate") is not None]
    if per_class:
        worst = max(per_class, key=lambda c: c["label_disagreement_rate"])
        if worst["label_disagreement_rate"]:
            possessive = source_words(section.get("source"))[1]
            text += FINDING_DISAGREEMENT_CLASS.format(
                klass=worst.get("class"), rate=percent(worst["label_disagreement_rate"]),
                possessive_lower=possessive[0].lower() + possessive[1:],
                error_rate=percent(worst.get("model_error_rate")))
    # A screening figure: never a headline on its own (headlines come from primary rows and verified rates).
    found.append(_finding("label_noise", "medium" if rate >= 0.01 else "info", text, weight=2 + rate))
    # Group rows of the disagreement rate are exploratory: they appear among the leads (_lead_findings).
    return found


def imbalance_sentence(counts: dict, ratio: float) -> str:
    """The class-imbalance finding, naming every class tied for the largest and the smallest count (never
    one of them at random)."""
    extremes = tied_extremes(counts)
    largest, smallest = extremes["largest"], extremes["smallest"]

    def who(names: list) -> str:
        verb = "has" if len(names) == 1 else "have"
        each = "" if len(names) == 1 else " each"
        return f"{join_names(names)} {verb} {counts[names[0]]} images{each}"

    return (f"Classes are imbalanced: {who(largest)}, {ratio:.1f}x as many as "
            f"{join_names(smallest)} ({counts[smallest[0]]}{' each' if len(smallest) > 1 else ''}).")


def _composition_findings(sections: dict) -> list[dict]:
    found = []
    classes = sections.get("class_distribution")
    if classes:
        ratio = classes.get("imbalance_ratio")
        if ratio and ratio >= 1.5:
            found.append(_finding("class_distribution", "medium" if ratio >= 3 else "low",
                                  imbalance_sentence(classes["counts"], ratio), weight=1 + min(ratio, 10) / 10))
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
            fewest = min(g["n"] for g in small)
            tied = sort_groups(g["group"] for g in small if g["n"] == fewest)
            smallest = (f"the smallest is {name} = {tied[0]} ({fewest} images)" if len(tied) == 1 else
                        f"the smallest are {name} = {join_names(tied, limit=3)} ({fewest} images each)")
            found.append(_finding("attribute_distribution", "medium",
                                  f"{len(small)} of {entry['n_groups']} groups of {name} have fewer images than the "
                                  f"minimum group size; {smallest}.", weight=1.1))
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
                              f"The class label is associated with the pixel attribute {attribute_label(entry['attribute'])} "
                              f"(Cramer's V = {entry['cramers_v']:.2f}): a model may learn it as a shortcut.",
                              weight=0.8 + entry["cramers_v"]))
    return found


def slices_tried(sections: dict) -> int:
    return int((sections.get("weak_slices") or {}).get("n_tried", 0))


def compose_findings(sections: dict, group_metrics: pd.DataFrame, *, n_skipped: int | None = None,
                     classes=()) -> list[dict]:
    """Findings as ``{"analysis", "severity", "text", "weight"}``, most important first."""
    found = []
    multiplicity = sections.get("multiplicity") or {}
    found += _performance_findings(group_metrics, multiplicity)
    found += _lead_findings(group_metrics, multiplicity)
    if multiplicity:
        found.append(_finding("multiplicity", "info", tests_made_text(multiplicity), weight=5.0))
    if "label_noise" in sections:
        found += _label_noise_findings(sections["label_noise"], group_metrics, classes)
    found += _composition_findings(sections)
    slices = (sections.get("weak_slices") or {}).get("slices", [])
    already = " ".join(f["text"] for f in found if f["analysis"] == "group_performance")
    reported = 0
    for entry in slices:
        name = f"{attribute_label(entry.get('attribute'))} = {entry.get('group')}"
        if name in already or reported >= 3:
            continue  # the per-group test already said it
        reported += 1
        found.append(_finding("weak_slices", "low",
                              f"Lead (slice search): {name} ({entry.get('n')} images) has accuracy "
                              f"{percent(entry.get('accuracy'))} against {percent(entry.get('rest_accuracy'))} for "
                              f"the rest of the data (adjusted p = {entry.get('p_value_adjusted', float('nan')):.2g} "
                              f"over {slices_tried(sections)} slices tried). Check it on new data before acting on it.",
                              weight=0.8))
    for entry in (sections.get("annotations") or {}).get("findings", []):
        found.append(_finding("annotations", entry["severity"], entry["text"], weight=entry.get("weight", 1.0)))
    quality = sections.get("data_quality") or {}
    n_concentration = int((quality.get("summary") or {}).get("n_concentration_findings", 0))
    for i, text in enumerate((quality.get("findings") or [])[:5]):
        # group/class concentrations are exploratory tests (leads); leakage and notes are facts
        if i < n_concentration:
            found.append(_finding("data_quality", "low", "Lead (exploratory): " + text, weight=0.7))
        else:
            found.append(_finding("data_quality", "medium", text, weight=1.0))
    if n_skipped:
        found.append(_finding("skipped", "medium", f"{n_skipped} inputs were skipped; see the list of skipped inputs.",
                              weight=1.5))
    found.sort(key=lambda f: (SEVERITY_ORDER[f["severity"]], -f["weight"]))
    return found
