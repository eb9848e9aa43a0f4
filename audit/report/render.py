"""``python -m audit report DIR --format pdf|html|md``: render an existing audit folder.

:func:`build_report` reads the folder (:mod:`audit.folder`) and arranges what every format shows into
one plain structure (sections, rows of already-computed numbers, plotly figures); :mod:`~audit.report.html`,
:mod:`~audit.report.pdf` and :mod:`~audit.report.markdown` only lay it out. Nothing here computes a
statistic: numbers are read from ``audit.json`` and the Parquet tables; the report only selects (top N +
"others" for long lists), sorts and formats them.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from audit.display import (attribute_label, group_sort_key, issue_label, join_names, leakage_not_checked,
                           metric_label, summary_label, tied_extremes)
from audit.errors import InputError
from audit.folder import AuditFolder, load_audit_folder
from audit.report.document import Report, fmt_interval, fmt_number, fmt_p, fmt_percent  # noqa: F401
from audit.report.thumbnails import (MAX_THUMBNAIL_PIXELS, THUMBNAIL_SIZE, _inside_root,  # noqa: F401
                                     thumbnail_bytes, thumbnail_data_uri)

ERROR_FORMAT = "report format must be pdf, html or md, got {value!r}"
ERROR_OUT_IS_DIR = "--out {path} is a folder; give a file name (e.g. {path}/report.{ext})"
ERROR_OUT_NOT_WRITABLE = "cannot write the report to {path} ({reason}); give --out a file in a folder you can write to"

FORMATS = ("pdf", "html", "md")
#: Rows shown of long lists (classes, groups, suspects); the rest are summarised as "others".
TOP_CLASSES = 30
TOP_GROUPS = 40
TOP_SUSPECTS = 24
TOP_ROWS = 15
#: Charts of composition / accuracy per attribute (metadata attributes only; the rest get tables).
MAX_PERFORMANCE_CHARTS = 8

METHODS = (
    ("Composition", "Counts of images per class and per group are exact. Shares of groups carry 95 % Wilson "
     "score intervals. The imbalance ratio is the largest class count divided by the smallest non-empty one. "
     "Associations between the class label and each attribute are chi-square tests of the class x group "
     "table, summarised as Cramer's V (0 = independent, 1 = the attribute determines the class), with p-values "
     "adjusted for multiple comparisons; cells with large adjusted residuals are listed as over- or "
     "under-represented."),
    ("Label quality", "Confident learning (Northcutt, Jiang and Chuang, 2021) flags the images whose given "
     "label the probabilities confidently disagree with: per-class confidence thresholds give a confident joint "
     "of given and likely true labels, calibrated to the data set size, and the flagged images are ranked by "
     "label score (the probability of the given label; lower = more suspicious). The label disagreement rate "
     "(overall, per class, per group) is the flagged fraction with a Wilson interval. It is a screening figure, "
     "not a label-error rate: wherever the model is wrong the label is flagged too, so the model's error rate on "
     "the same images is shown beside every disagreement rate, and only a review of a random sample measures "
     "label errors. The noise matrix is P(given label | true label) as the probabilities see it."),
    ("Performance by group", "Accuracy, recall and precision are proportions with 95 % Wilson intervals; "
     "balanced accuracy, macro-F1 and calibration error use a Poisson bootstrap. Each group is tested against "
     "the rest of the data, one-sided in the harmful direction, with p-values adjusted within each attribute "
     "and metric (Holm by default). A group is 'worse than the rest' only when that test is significant; "
     "groups smaller than the minimum group size, or with intervals wider than the maximum width, get "
     "'insufficient data' instead of a verdict. Weak slices are combinations of attribute values found by "
     "a search and tested the same way."),
    ("Data quality", "Every image is checked for defects with fixed, documented rules: exact duplicates (same "
     "SHA-256 of the file bytes); near duplicates (perceptual hashes - pHash, dHash and a colour hash - of the "
     "whole image, its 95 % centre and its four 90 % corners all within set Hamming distances, or, with a model, "
     "embeddings with cosine similarity of at least 0.995), grouped into duplicate sets; train/test leakage "
     "(near-duplicate pairs across splits); too dark or too light (mean luminance below 0.10 or above 0.90); "
     "blurry (variance of the Laplacian below 100); low information (luminance RMS contrast below 0.02); "
     "grayscale; odd size (side more than twice or less than half the data set's median) and odd aspect "
     "ratio (above 2); outliers (with embeddings: the 1 % most isolated images). Issue rates per class and "
     "group are proportions with 95 % Wilson intervals, each tested against the rest of the data (one-sided "
     "two-proportion z test, Holm-adjusted within an issue and attribute)."),
    ("Policy checks", "Each policy threshold is compared with the stored value and its interval: PASS, WARN "
     "(within the warning margin), FAIL, INSUFFICIENT_EVIDENCE (the group is too small, or the interval "
     "straddles the threshold), ERROR (the needed analysis failed) or SKIPPED (not part of this audit). Gaps "
     "and ratios between groups combine the two groups' intervals (MOVER)."),
    ("Reproducibility", "The data hash is a SHA-256 over the id, content hash and label of every audited image; "
     "the model checksum is the SHA-256 of the model file. Settings, seed and package versions are those of "
     "the run that wrote the audit folder; this report re-reads that folder and computes nothing new."),
)


# -- building ------------------------------------------------------------------------------------------------
def build_report(folder: str | os.PathLike | AuditFolder, *, thumbnails: bool = True) -> Report:
    """Read the audit folder and arrange every section of the report.

    Parameters
    ----------
    folder : path or AuditFolder
    thumbnails : bool
        Embed small thumbnails of the suspect images (flagged labels); False shows none (shareable reports).
    """
    data = folder if isinstance(folder, AuditFolder) else load_audit_folder(folder)
    audit = data.audit
    analyses = audit.get("analyses") or {}
    gm = data.group_metrics
    report = Report(folder=data.path, audit=audit, sections={}, notes=list(data.notes), thumbnails=thumbnails)
    s = report.sections
    s["cover"] = _cover(audit)
    s["summary"] = {**_split_findings(audit),
                    "errors": [{"analysis": e.get("analysis", ""), "message": e.get("message", "")}
                               for e in audit.get("errors") or []]}
    s["composition"] = _composition(report, analyses, audit)
    s["label_quality"] = _label_quality(report, analyses, audit, data, gm, thumbnails=thumbnails)
    s["performance"] = _performance(report, analyses, audit, gm)
    s["data_quality"] = _data_quality(analyses, splits=(audit.get("dataset") or {}).get("splits"))
    s["annotations"] = _annotations(analyses, data, gm, thumbnails=thumbnails)
    s["policy"] = _policy(audit)
    s["skipped"] = _skipped(audit)
    s["provenance"] = _provenance(audit)
    s["methods"] = [{"title": t, "text": x} for t, x in METHODS]
    return report


def _analysis_state(audit: dict, name: str) -> str | None:
    """Why a section is absent: the error message when the analysis failed, else None."""
    for error in audit.get("errors") or []:
        if error.get("analysis") == name:
            return f"The {name} analysis failed: {error.get('message', '')}"
    return None


def _split_findings(audit: dict) -> dict:
    """Headline findings, exploratory leads and the tests-made sentence (issue 13), from finding_details
    (older audits: every finding is a headline)."""
    details = audit.get("finding_details")
    if not details:
        return {"findings": list(audit.get("findings") or []), "leads": [], "tests": ""}
    headline, leads, tests = [], [], ""
    for item in details:
        text = item.get("text", "")
        if item.get("analysis") == "multiplicity":
            tests = text
        elif text.startswith("Lead"):
            leads.append(text)
        else:
            headline.append(text)
    return {"findings": headline, "leads": leads, "tests": tests}


def _cover(audit: dict) -> dict:
    dataset = audit.get("dataset") or {}
    model = audit.get("model") or None
    provenance = audit.get("provenance") or {}
    verdict = audit.get("verdict")
    return {
        "dataset": dataset.get("source") or dataset.get("root") or "",
        "n_images": dataset.get("n_images"), "n_classes": dataset.get("n_classes"),
        "n_skipped": dataset.get("n_skipped", 0), "group_attributes": dataset.get("group_attributes") or [],
        "model": (f"{model.get('kind', '')}: {model.get('source', '')}"
                  + (f" (read as {model['predictions_kind']})" if model.get("predictions_kind") else "")
                  if model else "none (dataset only)"),
        "audit_date": provenance.get("finished_at") or provenance.get("started_at") or "",
        "report_date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "verdict": verdict["status"] if verdict else None,
        "kind": audit.get("kind", "run"),
        "tool": f"{(audit.get('tool') or {}).get('name', 'imagefair')} {(audit.get('tool') or {}).get('version', '')}",
    }


def _top_with_others(items: list[tuple[str, int]], top_n: int) -> tuple[list, dict | None]:
    shown = items[:top_n]
    rest = items[top_n:]
    others = {"n_classes": len(rest), "n": int(sum(n for _, n in rest))} if rest else None
    return shown, others


def _composition(report: Report, analyses: dict, audit: dict) -> dict:
    from audit.report import figures

    out: dict = {}
    classes = analyses.get("class_distribution")
    if classes:
        counts = classes.get("counts") or {}
        shares = classes.get("shares") or {}
        items = sorted(counts.items(), key=lambda item: (-item[1], group_sort_key(item[0])))
        shown, others = _top_with_others(items, TOP_CLASSES)
        out["classes"] = {
            "rows": [{"class": c, "n": n, "share": fmt_percent(shares.get(c))} for c, n in shown],
            "others": others, "n_classes": classes.get("n_classes", len(counts)),
            "imbalance_ratio": fmt_number(classes.get("imbalance_ratio"), 3),
            "normalised_entropy": fmt_number(classes.get("normalised_entropy"), 3),
            # every class tied for the largest / smallest count; balanced data names none (issue 12)
            **_class_extremes(counts),
            "empty": list(classes.get("empty_classes") or []),
            "split_shift": classes.get("split_shift")}
        report.figures["class_counts"] = figures.class_counts_figure(counts, top_n=TOP_CLASSES)
    else:
        out["classes_missing"] = _analysis_state(audit, "class_distribution") or "No class distribution."
    distribution = analyses.get("attribute_distribution")
    group_attributes = list((audit.get("dataset") or {}).get("group_attributes") or [])
    if distribution:
        attributes = []
        for name, entry in (distribution.get("attributes") or {}).items():
            groups = entry.get("groups") or []
            rows = figures.groups_in_display_order(groups)  # age bins in natural order, others by size
            key = f"shares::{name}"
            attributes.append({
                "name": attribute_label(name), "key": key, "is_pixel": name not in group_attributes,
                "n_groups": entry.get("n_groups", len(groups)), "missing_rate": fmt_percent(entry.get("missing_rate")),
                "n_missing": entry.get("n_missing", 0), "n_small_groups": entry.get("n_small_groups", 0),
                "rows": [{"group": g["group"], "n": g["n"], "share": fmt_percent(g.get("share")),
                          "interval": fmt_interval(g.get("ci_low"), g.get("ci_high")),
                          "small": bool(g.get("is_small"))} for g in rows[:TOP_GROUPS]],
                "n_hidden": max(len(rows) - TOP_GROUPS, 0),
                "reference": entry.get("reference")})
            if groups and name in group_attributes:
                report.figures[key] = figures.group_shares_figure(groups, attribute=name, top_n=TOP_GROUPS)
        attributes.sort(key=lambda a: a["is_pixel"])
        out["attributes"] = attributes
        intersections = [
            {"name": attribute_label(name), "n_cells_possible": entry.get("n_cells_possible"),
             "n_cells_empty": entry.get("n_cells_empty"), "n_small_groups": entry.get("n_small_groups"),
             "smallest": sorted(entry.get("groups") or [], key=lambda g: (g["n"], group_sort_key(g["group"])))[:3],
             "is_pixel": any(part not in group_attributes for part in name.split(" & "))}
            for name, entry in (distribution.get("intersections") or {}).items()]
        # metadata intersections first, then those with the most small groups
        intersections.sort(key=lambda i: (i["is_pixel"], -(i["n_small_groups"] or 0)))
        out["intersections"] = intersections[:TOP_ROWS]
        out["intersections_hidden"] = max(len(intersections) - TOP_ROWS, 0)
        out["min_group_size"] = distribution.get("min_group_size")
    else:
        out["attributes_missing"] = _analysis_state(audit, "attribute_distribution")
    associations = analyses.get("associations")
    if associations:
        entries = associations.get("attributes") or []
        out["associations"] = [
            {"attribute": attribute_label(e.get("attribute")), "cramers_v": fmt_number(e.get("cramers_v"), 3),
             "p_adjusted": fmt_p(e.get("p_value_adjusted")), "significant": bool(e.get("significant")),
             "low_expected_counts": bool(e.get("low_expected_counts")),
             "cells": [c for c in (e.get("cells") or []) if c.get("significant")][:5]} for e in entries]
        if entries:
            report.figures["associations"] = figures.association_figure(entries)
    else:
        out["associations_missing"] = _analysis_state(audit, "associations")
    return out


def _class_extremes(counts: dict) -> dict:
    extremes = tied_extremes(counts)
    each = {word: (f"{counts[extremes[word][0]]:,} images" + (" each" if len(extremes[word]) > 1 else ""))
            if extremes[word] else "" for word in ("smallest", "largest")}
    return {"balanced": extremes["balanced"], "smallest": join_names(extremes["smallest"]),
            "largest": join_names(extremes["largest"]), "smallest_n": each["smallest"], "largest_n": each["largest"]}


def _top_confusions(matrix, classes, top_n: int = TOP_ROWS) -> list[dict]:
    """Largest off-diagonal entries of the stored noise matrix (selection only)."""
    array = np.asarray(matrix, dtype=float)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] != len(classes):
        return []
    off = array.copy()
    np.fill_diagonal(off, -np.inf)
    flat = np.argsort(off, axis=None)[::-1][:top_n]
    out = []
    for index in flat:
        given, true = np.unravel_index(index, array.shape)
        value = array[given, true]
        if not np.isfinite(value) or value <= 0:
            break
        out.append({"given": classes[given], "true": classes[true], "rate": fmt_number(value, 3)})
    return out


def _label_quality(report: Report, analyses: dict, audit: dict, data: AuditFolder, gm: pd.DataFrame, *,
                   thumbnails: bool) -> dict:
    from audit.report import figures

    section = analyses.get("label_noise")
    if not section:
        reason = _analysis_state(audit, "label_noise") or (
            "No label-noise estimate: the audit has no model or predictions.")
        return {"present": False, "reason": reason}
    from audit.findings import disagreement_sentence

    classes = list(audit.get("classes") or [])
    interval = list(section.get("label_disagreement_rate_ci") or [None, None]) + [None, None]
    error_interval = list(section.get("model_error_rate_ci") or [None, None]) + [None, None]
    out = {"present": True, "disagreement_rate": fmt_percent(section.get("label_disagreement_rate")),
           "interval": fmt_interval(interval[0], interval[1]), "n_label_issues": section.get("n_label_issues"),
           "model_error_rate": fmt_percent(section.get("model_error_rate")),
           "model_error_interval": fmt_interval(error_interval[0], error_interval[1]),
           "sentence": disagreement_sentence(section) or "",
           "source": section.get("source", ""), "source_description": section.get("source_description", ""),
           "source_reason": (section.get("source_choice") or {}).get("reason", ""),
           "alternatives": [{"name": name, "description": entry.get("description", name),
                             "rate": fmt_percent(entry.get("label_disagreement_rate")),
                             "error": fmt_percent(entry.get("model_error_rate")),
                             "n_label_issues": entry.get("n_label_issues")}
                            for name, entry in (section.get("alternatives") or {}).items()]}
    errors = gm[gm["metric"] == "model_error_rate"].set_index(["attribute", "group", "class"])

    def error_of(row) -> tuple[str, str]:
        key = (row["attribute"], row["group"], row["class"])
        if key not in errors.index:
            return "n/a", ""
        match = errors.loc[[key]].iloc[0]
        return fmt_percent(match["value"]), fmt_interval(match["ci_low"], match["ci_high"])

    per_class = gm[(gm["metric"] == "label_disagreement_rate") & (gm["attribute"] == "all") & (gm["class"] != "")]
    if not per_class.empty:
        # classes with enough evidence first: on 1,000 classes the highest point estimates are tiny classes
        ordered = per_class.sort_values(["insufficient_evidence", "value"], ascending=[True, False])
        out["per_class"] = []
        for _, r in ordered.head(TOP_ROWS).iterrows():
            error, error_interval_text = error_of(r)
            out["per_class"].append({"class": r["class"], "n": int(r["n"]), "rate": fmt_percent(r["value"]),
                                     "interval": fmt_interval(r["ci_low"], r["ci_high"]),
                                     "error": error, "error_interval": error_interval_text,
                                     "insufficient": bool(r["insufficient_evidence"])})
        out["per_class_hidden"] = max(len(ordered) - TOP_ROWS, 0)
        judged = per_class[~per_class["insufficient_evidence"]]
        out["per_class_chart_judged_only"] = 0 < len(judged) < len(per_class)
        report.figures["noise_by_class"] = figures.class_metric_figure(
            judged if len(judged) else per_class, metric="label disagreement rate", top_n=25, higher_is_better=False)
    per_group = gm[(gm["metric"] == "label_disagreement_rate") & (gm["attribute"] != "all") & (gm["class"] == "")
                   & (gm["verdict"] == "worse_than_rest")]
    out["noisy_groups"] = []
    for _, r in per_group.sort_values("value", ascending=False).head(TOP_ROWS).iterrows():
        error, error_interval_text = error_of(r)
        out["noisy_groups"].append({"attribute": attribute_label(r["attribute"]), "group": r["group"],
                                    "n": int(r["n"]),
                                    "rate": fmt_percent(r["value"]), "interval": fmt_interval(r["ci_low"], r["ci_high"]),
                                    "error": error, "error_interval": error_interval_text})
    matrix = section.get("noise_matrix")
    if matrix is not None and 2 <= len(classes) <= 20:
        report.figures["noise_matrix"] = figures.noise_matrix_figure(matrix, classes)
    elif matrix is not None:
        out["confusions"] = _top_confusions(matrix, classes)
    out["suspects"], out["n_suspects"] = _suspects(data, thumbnails=thumbnails)
    out["reviews"] = _review_summary(data)
    out["verified"] = _verified(data)
    return out


def _verified(data: AuditFolder) -> dict | None:
    """The verified label-error rate (``review --status``, :mod:`audit.review_sample`), formatted; shown beside
    the disagreement rate. None when the decisions cannot be read."""
    import sqlite3

    from audit.review_sample import compute_review_status, load_review_sample
    from audit.reviews import list_decisions

    try:
        status = compute_review_status(data.images, list_decisions(data.path), load_review_sample(data.path),
                                       classes=data.classes, folder_label=str(data.path))
    except (sqlite3.Error, pd.errors.DatabaseError, InputError):
        return None
    rate = status["label_error_rate"]
    return {"available": rate["estimate"] is not None, "rate": fmt_percent(rate["estimate"]),
            "interval": fmt_interval(rate["ci_low"], rate["ci_high"]) if rate["estimate"] is not None else "",
            "reviewed": rate["reviewed"], "sample_size": rate["sample_size"],
            "confirmed_errors": rate["confirmed_errors"],
            "confirmed_outside": status["confirmed_errors_outside_sample"],
            "message": status["message"], "method": rate["method"]}


def _suspects(data: AuditFolder, *, thumbnails: bool) -> tuple[list, int]:
    images = data.images
    if "is_label_issue" not in images.columns:
        return [], 0
    flagged = images[images["is_label_issue"].fillna(False).astype(bool)]
    if "label_score" in flagged.columns:
        flagged = flagged.sort_values("label_score", kind="stable")
    decisions = {}
    if data.reviews is not None and len(data.reviews):
        decisions = dict(zip(data.reviews["id"].astype(str), data.reviews["decision"].astype(str)))
    rows = []
    for _, r in flagged.head(TOP_SUSPECTS).iterrows():
        rows.append({"id": str(r["id"]), "path": str(r.get("path", "")), "label": str(r.get("label", "")),
                     "suggested": str(r.get("suggested_label", "") or ""),
                     "score": fmt_number(r.get("label_score"), 3),
                     "thumbnail": thumbnail_data_uri(r.get("path")) if thumbnails and _inside_root(
                         r.get("path"), _image_root(data.audit)) else None,
                     "review": decisions.get(str(r["id"]), "not reviewed" if data.reviews is not None else "")})
    return rows, int(len(flagged))


def _image_root(audit: dict):
    """The folder a report may embed images from: ``--data-root`` when the audit had one, else the data root."""
    dataset = audit.get("dataset") or {}
    return dataset.get("data_root") or dataset.get("root")


def _review_summary(data: AuditFolder) -> dict | None:
    if data.reviews is None:
        return None
    reviews = data.reviews
    flagged_ids = set()
    if "is_label_issue" in data.images.columns:
        flagged_ids = set(data.images.loc[data.images["is_label_issue"].fillna(False).astype(bool), "id"].astype(str))
    counts = reviews["decision"].value_counts().to_dict() if len(reviews) else {}
    reviewed_flagged = int(reviews["id"].astype(str).isin(flagged_ids).sum()) if len(reviews) else 0
    return {"n_reviewed": int(len(reviews)), "counts": {k: int(v) for k, v in counts.items()},
            "n_flagged": len(flagged_ids), "n_flagged_reviewed": reviewed_flagged}


def _metric_rows(frame: pd.DataFrame) -> list[dict]:
    from audit.report.figures import VERDICT_LABELS

    return [{"attribute": attribute_label(r["attribute"]), "group": r["group"], "n": int(r["n"]),
             "value": fmt_percent(r["value"]),
             "interval": fmt_interval(r["ci_low"], r["ci_high"]),
             "verdict": VERDICT_LABELS.get(r["verdict"], r["verdict"]) if r["verdict"] else "-",
             "worse": r["verdict"] == "worse_than_rest", "insufficient": bool(r["insufficient_evidence"])}
            for _, r in frame.iterrows()]


def _performance(report: Report, analyses: dict, audit: dict, gm: pd.DataFrame) -> dict:
    from audit.report import figures

    section = analyses.get("group_performance")
    if not section:
        reason = _analysis_state(audit, "group_performance") or (
            "No performance by group: the audit has no model or predictions.")
        return {"present": False, "reason": reason}
    metrics_info = audit.get("metrics") or {}
    overall = section.get("overall") or {}
    out: dict = {"present": True, "overall": [
        {"metric": metric_label(name), "value": fmt_percent(v.get("value")),
         "interval": fmt_interval(v.get("ci_low"), v.get("ci_high")), "n": v.get("n"),
         "description": (metrics_info.get(name) or {}).get("description", "")}
        for name, v in overall.items() if isinstance(v, dict)]}
    accuracy = gm[(gm["metric"] == "accuracy") & (gm["class"] == "")]
    whole = accuracy[accuracy["attribute"] == "all"]
    overall_value = float(whole["value"].iloc[0]) if len(whole) else None
    dataset = audit.get("dataset") or {}
    singles = list(dataset.get("group_attributes") or []) + list(dataset.get("pixel_attributes") or [])
    thresholds = _policy_thresholds(audit)
    tables = []
    for attribute in singles:
        rows = accuracy[accuracy["attribute"] == attribute]
        if rows.empty:
            continue
        rows = figures.order_metric_rows(rows, top_n=TOP_GROUPS)  # lowest first; age bins in natural order
        key = f"accuracy::{attribute}"
        tables.append({"attribute": attribute_label(attribute), "key": key, "rows": _metric_rows(rows.head(TOP_GROUPS)),
                       "n_hidden": max(len(rows) - TOP_GROUPS, 0),
                       "is_pixel": attribute not in (dataset.get("group_attributes") or [])})
        if tables[-1]["is_pixel"] or len(tables) > MAX_PERFORMANCE_CHARTS:
            continue  # pixel attributes: tables only, so the number of charts stays bounded
        report.figures[key] = figures.group_metric_figure(
            rows, metric="accuracy", attribute=attribute, overall=overall_value,
            threshold=thresholds.get(("performance.min_worst_group", attribute)), top_n=TOP_GROUPS)
    out["tables"] = tables
    curves = (analyses.get("calibration") or {}).get("attributes") or {}
    out["reliability"] = []
    for attribute in [a for a in (dataset.get("group_attributes") or []) if a in curves][:3]:
        key = f"reliability::{attribute}"
        report.figures[key] = figures.reliability_figure(curves[attribute], attribute=attribute)
        out["reliability"].append({"attribute": attribute_label(attribute), "key": key})
    intersections = accuracy[accuracy["attribute"].str.contains(" & ", regex=False)]
    judged = figures.sort_rows(intersections[~intersections["insufficient_evidence"]], "value")
    out["intersections"] = _metric_rows(judged.head(TOP_ROWS))
    out["intersections_small"] = int(intersections["insufficient_evidence"].sum())
    worse = gm[(gm["verdict"] == "worse_than_rest") & (gm["class"] == "")
               & gm["metric"].isin([m for m, info in metrics_info.items() if info.get("higher_is_better") is not None
                                    and m not in ("label_disagreement_rate", "model_error_rate")
                                    and not m.startswith("issue_rate")])]
    scope = worse["scope"] if "scope" in worse.columns else pd.Series("", index=worse.index)
    worse = worse.assign(_primary=scope.ne("primary"), _order=worse["metric"].ne("accuracy"),
                         _scope=scope.replace("", "-"),
                         _p=worse["p_adjusted"] if "p_adjusted" in worse.columns else float("nan"))
    worse = worse.sort_values(["_primary", "_order", "value"])
    out["worst"] = [dict(row, metric=metric_label(metric), scope=scope_word, p_adjusted=fmt_p(p))
                    for row, metric, scope_word, p in
                    zip(_metric_rows(worse.head(TOP_ROWS)), worse.head(TOP_ROWS)["metric"],
                        worse.head(TOP_ROWS)["_scope"], worse.head(TOP_ROWS)["_p"])]
    out["n_worse"] = int(len(worse))
    slices = (analyses.get("weak_slices") or {})
    out["slices"] = [{"group": e.get("group"), "n": e.get("n"), "accuracy": fmt_percent(e.get("accuracy")),
                      "rest": fmt_percent(e.get("rest_accuracy")), "p_adjusted": fmt_p(e.get("p_value_adjusted"))}
                     for e in (slices.get("slices") or [])[:10]]
    out["slices_tried"] = slices.get("n_tried")
    out["slices_missing"] = _analysis_state(audit, "weak_slices")
    recall = gm[(gm["metric"] == "recall") & (gm["attribute"] == "all") & (gm["class"] != "")]
    if not recall.empty:
        ordered = recall.sort_values("value")
        out["recall"] = [{"class": r["class"], "n": int(r["n"]), "value": fmt_percent(r["value"]),
                          "interval": fmt_interval(r["ci_low"], r["ci_high"])}
                         for _, r in ordered.head(TOP_ROWS).iterrows()]
        out["recall_hidden"] = max(len(ordered) - TOP_ROWS, 0)
    return out


def _policy_thresholds(audit: dict) -> dict:
    verdict = audit.get("verdict") or {}
    return {(c.get("name"), c.get("attribute")): c.get("threshold") for c in verdict.get("checks") or []}


def _flatten(value, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Scalar leaves of a nested dict as ``(dotted key, text)`` (two levels; longer lists summarised)."""
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            out += _flatten(item, f"{prefix}.{key}" if prefix else str(key), depth + 1)
        return out
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value) and len(value) <= 8:
            return [(prefix, ", ".join(fmt_number(v, 4) if isinstance(v, float) else str(v) for v in value))]
        return [(prefix, f"{len(value)} entries")]
    if isinstance(value, float):
        return [(prefix, fmt_number(value, 4))]
    return [(prefix, "-" if value is None else str(value))]


def _data_quality(analyses: dict, *, splits=("train", "test")) -> dict | None:
    """Findings, issue counts and the other summary numbers of ``analyses.data_quality`` (settings, metric
    definitions and per-pair lists are left to audit.json). With fewer than two splits leakage was not
    checked: the section says so instead of showing "0 pairs"."""
    section = analyses.get("data_quality")
    if not section:
        return None
    not_checked = leakage_not_checked(splits)
    has_splits = not_checked is None
    summary = section.get("summary") if isinstance(section.get("summary"), dict) else {}
    issues = summary.get("issues") if isinstance(summary.get("issues"), dict) else section.get("issue_counts") or {}
    rest = {k: v for k, v in section.items()
            if k not in ("findings", "settings", "metrics", "issues", "summary", "issue_counts")}
    rest.update({k: v for k, v in summary.items() if k != "issues"})
    items = [(summary_label(k), v) for k, v in _flatten(rest)
             if v not in ("", "-", "0 entries") and (has_splits or not k.startswith("leakage"))]
    if not has_splits:
        items.insert(0, ("train/test leakage", "not checked: " + not_checked.split(": ", 1)[1].rstrip(".")))
    return {"findings": list(section.get("findings") or []),
            "issues": [{"issue": issue_label(k), "n": v} for k, v in issues.items()] if isinstance(issues, dict) else [],
            "n_images": summary.get("n_images"), "items": items[:30], "leakage_not_checked": not_checked}


#: Images with the most annotator disagreement shown in the report.
TOP_DISAGREED = 12


def _agreement_rows(rows: pd.DataFrame) -> list[dict]:
    from audit.report.figures import VERDICT_LABELS

    return [{"attribute": attribute_label(r["attribute"]), "group": str(r["group"]), "class": str(r["class"]),
             "n": int(r["n"]),
             "value": fmt_number(r["value"], 3), "interval": f"{fmt_number(r['ci_low'], 3)}-{fmt_number(r['ci_high'], 3)}",
             "verdict": VERDICT_LABELS.get(str(r["verdict"]), str(r["verdict"]))} for _, r in rows.iterrows()]


def _annotations(analyses: dict, data: AuditFolder, gm: pd.DataFrame, *, thumbnails: bool) -> dict | None:
    """Annotation quality (``analyses.annotations``, ``annotation_agreement`` rows, ``annotators.parquet``,
    the images with the lowest ``annotation_disagreement_score``). Annotators are listed by name only when
    some differ beyond chance; otherwise the section says they are indistinguishable."""
    section = analyses.get("annotations")
    if not section:
        return None
    alpha = section.get("krippendorff_alpha") or {}
    rows = gm[gm["metric"] == "annotation_agreement"] if "metric" in gm else gm.iloc[0:0]
    by_class = rows[(rows["attribute"] == "all") & (rows["class"] != "")].sort_values("value")
    by_group = rows[(rows["attribute"] != "all") & ~rows["attribute"].str.startswith("annotator & ")]
    annotator_groups = rows[rows["attribute"].str.startswith("annotator & ") & (rows["verdict"] == "worse_than_rest")]
    table = pd.DataFrame(section.get("annotators") or [])
    flagged = table[table["verdict"] == "worse_than_rest"].sort_values("accuracy") if len(table) else table
    spread = section.get("annotator_accuracy_spread") or {}
    images = data.images
    disagreed = []
    n_flagged_images = 0
    if "annotation_disagreement_score" in images.columns:
        flag = images["is_annotation_disagreement_issue"].fillna(False).astype(bool)
        n_flagged_images = int(flag.sum())
        root = _image_root(data.audit)
        for _, r in images[flag].sort_values("annotation_disagreement_score", kind="stable").head(TOP_DISAGREED).iterrows():
            disagreed.append({"id": str(r["id"]), "label": str(r.get("label", "")),
                              "consensus": str(r.get("consensus_label", "") or ""),
                              "score": fmt_number(r.get("consensus_score"), 3),
                              "agreement": fmt_number(r.get("annotation_agreement"), 2),
                              "n": int(r.get("n_annotations", 0)),
                              "thumbnail": thumbnail_data_uri(r.get("path")) if thumbnails and _inside_root(
                                  r.get("path"), root) else None})
    verdicts = section.get("annotator_verdicts") or {}
    return {
        "findings": [f.get("text", "") for f in section.get("findings") or []],
        "items": [("consensus method", str(section.get("method", "")).replace("_", "-")),
                  ("labels", section.get("n_annotations")), ("annotators", section.get("n_annotators")),
                  ("images with labels", section.get("n_images_annotated")),
                  ("images without labels", section.get("n_images_without_annotation")),
                  ("ties resolved", f"{section.get('n_ties')} ({section.get('tie_rule', '')})"),
                  ("Krippendorff's alpha", f"{fmt_number(alpha.get('value'), 3)} (95 % CI "
                                           f"{fmt_number(alpha.get('ci_low'), 3)}-{fmt_number(alpha.get('ci_high'), 3)})"),
                  ("annotator verdicts", ", ".join(f"{k}: {v}" for k, v in sorted(verdicts.items())) or "-"),
                  ("accuracy of tested annotators, 5-95 %",
                   f"{fmt_number(spread.get('accuracy_p05'), 3)}-{fmt_number(spread.get('accuracy_p95'), 3)}"
                   if spread else "-")],
        "indistinguishable": bool(section.get("annotators_indistinguishable")),
        "by_class": _agreement_rows(by_class),
        "by_group": _agreement_rows(by_group),
        "annotator_groups": _agreement_rows(annotator_groups.head(10)),
        "flagged": [{"annotator": str(r["annotator"]), "n": int(r["n"]), "accuracy": fmt_number(r["accuracy"], 3),
                     "interval": f"{fmt_number(r['ci_low'], 3)}-{fmt_number(r['ci_high'], 3)}"}
                    for _, r in flagged.head(20).iterrows()],
        "n_flagged": int(len(flagged)),
        "disagreed": disagreed, "n_disagreed": n_flagged_images,
    }


def _policy(audit: dict) -> dict | None:
    verdict = audit.get("verdict")
    if not verdict:
        return None
    from audit.policy import ERROR, FAIL, status_rank

    checks = sorted(verdict.get("checks") or [], key=lambda c: status_rank(c.get("status")))
    rows = [{"name": c.get("name"), "status": c.get("status"), "value": fmt_number(c.get("value")),
             "threshold": fmt_number(c.get("threshold")), "where": _where(c), "message": c.get("message", "")}
            for c in checks]
    # the checks behind a FAIL or ERROR verdict, shown on the first page
    return {"status": verdict.get("status"), "checks": rows, "failed": [r for r in rows if r["status"] in (FAIL, ERROR)]}


def _where(check: dict) -> str:
    """``attribute = group, class c`` of a verdict check (empty parts left out)."""
    parts = []
    attribute, group = check.get("attribute"), check.get("group")
    if attribute not in ("", "all", None):
        parts.append(f"{attribute} = {group}" if group else attribute)
    if check.get("class"):
        parts.append(f"class {check['class']}")
    return ", ".join(parts)


def _skipped(audit: dict) -> dict:
    entries = audit.get("skipped") or []
    reasons = pd.Series([e.get("reason", "") for e in entries], dtype=object).value_counts()
    return {"n": len(entries), "by_reason": [{"reason": r, "n": int(n)} for r, n in reasons.head(10).items()],
            "rows": [{"row": "-" if e.get("row") is None else e.get("row"), "path": e.get("path", ""),
                      "reason": e.get("reason", "")} for e in entries[:50]],
            "n_hidden": max(len(entries) - 50, 0)}


def _provenance(audit: dict) -> dict:
    provenance = audit.get("provenance") or {}
    main = [(k, provenance.get(k)) for k in ("data_hash", "model_sha256", "seed", "min_group_size", "started_at",
                                               "finished_at", "duration_s", "platform", "command")
            if k in provenance]
    main = [(k, "-" if v is None else str(v)) for k, v in main]
    main.insert(0, ("schema_version", str(audit.get("schema_version", ""))))
    return {"main": main, "settings": _flatten(provenance.get("settings") or {}),
            "versions": [(k, "-" if v is None else str(v)) for k, v in (provenance.get("versions") or {}).items()],
            "preprocessing": _flatten(provenance.get("preprocessing") or {})}


# -- entry point ---------------------------------------------------------------------------------------------
def render_report(folder: str | os.PathLike, *, format: str, out: str | os.PathLike | None = None,
                  thumbnails: bool = True) -> Path:
    """Render the audit in ``folder`` as PDF, HTML or Markdown and write it atomically.

    Parameters
    ----------
    folder : path
        An audit folder.
    format : {"pdf", "html", "md"}
    out : path, optional
        Output file (default ``folder/report.<format>``).
    thumbnails : bool
        Embed thumbnails of suspect images (flagged labels) (False: no image of anyone is shown).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    InputError
        Missing or corrupt audit folder, unknown format, ``out`` is a folder.
    """
    if (Path(folder) / "comparison.json").is_file() and not (Path(folder) / "audit.json").is_file():
        from audit.compare.report import render_comparison_report  # a comparison folder (compare OLD NEW)

        return render_comparison_report(folder, format=format, out=out, thumbnails=thumbnails)
    if format not in FORMATS:
        raise InputError(ERROR_FORMAT.format(value=format))
    folder = Path(folder)
    target = Path(out) if out is not None else folder / f"report.{format}"
    if target.is_dir():
        raise InputError(ERROR_OUT_IS_DIR.format(path=target, ext=format))
    from audit.io.atomic import check_replaceable, write_bytes_atomic

    check_replaceable(target)  # never replace a device node, pipe or socket (report --out /dev/full)

    if format == "md":
        from audit.report.markdown import render_markdown

        report = build_report(folder, thumbnails=False)
        data = render_markdown(report).encode("utf-8")
    elif format == "html":
        from audit.report.html import render_html

        report = build_report(folder, thumbnails=thumbnails)
        data = render_html(report).encode("utf-8")
    else:
        from audit.report.pdf import ChartServer, render_pdf

        with ChartServer() as server:  # Chromium boots while the folder is read
            report = build_report(folder, thumbnails=thumbnails)
            data = render_pdf(report, server=server)
    try:
        write_bytes_atomic(target, data)
    except OSError as error:
        # missing/unwritable folder, a file where a folder should be, disk full: one line naming --out
        raise InputError(ERROR_OUT_NOT_WRITABLE.format(path=target, reason=error.strerror or type(error).__name__),
                         source=str(target)) from error
    _readable(target)
    return target


def _readable(path: Path) -> None:
    """Atomic writes create the file with mode 0600 (mkstemp); a report is meant to be shared: apply the umask."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        path.chmod(0o666 & ~mask)
    except OSError:
        pass
