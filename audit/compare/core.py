"""``compare_audits``: what changed between two audits of a data set (and its model).

Reads nothing from disk: it gets the two folders as read by the shared reader and returns the comparison
(``comparison.json`` content) and the per-image change table. Sections:

- ``matching``: how images were paired and what happened to each (:mod:`audit.compare.matching`);
- ``data``: class and group shares old vs new with intervals and a shift test, removed shares per group,
  the relabels cross-checked against OLD's review decisions;
- ``labels``: label-disagreement rate (model-based; *not* an error rate) and, where both audits hold
  reviewed samples, the verified label-error rate, old vs new;
- ``model``: every metric, group and class with difference, interval, test and verdict
  (:mod:`audit.compare.model`);
- ``quality``: exact and near duplicates across versions (e.g. NEW's test split holding OLD's training
  images) and defects of the new images;
- ``findings``: plain sentences, most important first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.analysis._stats import wilson_interval
from audit.compare import matching as m
from audit.compare.multiplicity import tests_made_sentence
from audit.compare.model import (EXPLORATORY, HIGHER_IS_BETTER, IMPROVED, INSUFFICIENT, PAIRED, REGRESSED,
                                 UNPAIRED, ROW_COLUMNS, VersionData, compare_model, decide_rows)
from audit.compare.stats import chi_square_shift, fisher_two_sided_p_value, unpaired_difference_interval

COMPARISON_SCHEMA_VERSION = "1.1"  # 1.1: data tests in the families, multiplicity
MISSING_GROUP = "<missing>"
DISAGREEMENT_METRICS = ("label_disagreement_rate", "estimated_noise_rate")
#: A paired comparison needs the common (same-pixel, both scored) images to make up at least this share of
#: NEW's scored images; otherwise the versions are compared as independent samples.
MIN_PAIRED_SHARE = 0.5
TRAIN_SPLITS = ("train", "training")
#: k of top-k accuracy when OLD's audit does not record its ``top_k`` setting (the audit's default).
TOP_K = 5
HELD_OUT_SPLITS = ("test", "testing", "val", "valid", "validation", "dev", "holdout")

NOTE_ID_ONLY = ("Neither audit records content hashes (label-noise audits), so images were matched by id only: a "
                "changed image under the same id cannot be seen.")
NOTE_NO_OVERLAP = ("The two audits share no image, so every model comparison is unpaired (independent samples): "
                   "a difference mixes the change of model with the change of data.")
NOTE_CLASSES = ("The class lists differ: only the {n} classes both audits share are compared; only in OLD: "
                "{only_old}; only in NEW: {only_new}. {n_left} image(s) with other labels are left out of the "
                "model comparison.")
NOTE_PARTIAL_PAIRING = ("The paired model comparison covers the {n} images both audits score with the same pixels "
                        "({share} of NEW's scored images); the {n_new_only} images only NEW scores are not in it.")
NOTE_NO_MODEL = "No model comparison: {which} has no predictions."


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare_audits`.

    Attributes
    ----------
    comparison : dict
        The content of ``comparison.json`` (JSON-safe).
    image_changes : DataFrame
        The content of ``image_changes.parquet``: one row per matched pair, added or removed image.
    """

    comparison: dict
    image_changes: pd.DataFrame


def _settings(audit: dict) -> dict:
    return (audit.get("provenance") or {}).get("settings") or {}


def _group_attributes(audit: dict, images: pd.DataFrame) -> tuple[list, list]:
    dataset = audit.get("dataset") or {}
    metadata = [a for a in dataset.get("group_attributes") or [] if a in images.columns]
    pixel = [a for a in dataset.get("pixel_attributes") or [] if a in images.columns and a not in metadata
             and a not in (dataset.get("constant_attributes") or [])]
    return metadata, pixel


def _labels_of(values: pd.Series) -> pd.Series:
    text = values.astype(object).where(values.notna(), MISSING_GROUP).astype(str)
    return text.where(text != "", MISSING_GROUP).reset_index(drop=True)


def _share_rows(attribute: str, old_values: pd.Series, new_values: pd.Series, removed_old: np.ndarray, *,
                confidence_level: float) -> tuple[list, dict]:
    old_values, new_values = _labels_of(old_values), _labels_of(new_values)
    groups = sorted(set(old_values) | set(new_values))
    counts_old = old_values.value_counts().reindex(groups, fill_value=0).to_numpy()
    counts_new = new_values.value_counts().reindex(groups, fill_value=0).to_numpy()
    removed = old_values[removed_old].value_counts().reindex(groups, fill_value=0).to_numpy()
    n_old, n_new = len(old_values), len(new_values)
    lo_old, hi_old = wilson_interval(counts_old, n_old, confidence_level=confidence_level)
    lo_new, hi_new = wilson_interval(counts_new, n_new, confidence_level=confidence_level)
    diff, low, high = unpaired_difference_interval(counts_old, n_old, counts_new, n_new,
                                                   confidence_level=confidence_level)
    p = fisher_two_sided_p_value(counts_old, n_old, counts_new, n_new)
    r_low, r_high = wilson_interval(removed, counts_old, confidence_level=confidence_level)
    rows = []
    for i, group in enumerate(groups):
        rows.append({"attribute": attribute, "group": group, "n_old": int(counts_old[i]), "n_new": int(counts_new[i]),
                     "share_old": counts_old[i] / n_old if n_old else None,
                     "share_old_ci": [float(lo_old[i]), float(hi_old[i])],
                     "share_new": counts_new[i] / n_new if n_new else None,
                     "share_new_ci": [float(lo_new[i]), float(hi_new[i])],
                     "difference": float(diff[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
                     "p_value": float(p[i]),
                     "n_removed": int(removed[i]),
                     "removed_share": float(removed[i] / counts_old[i]) if counts_old[i] else None,
                     "removed_share_ci": [float(r_low[i]), float(r_high[i])] if counts_old[i] else None})
    statistic, dof, p_value = chi_square_shift(counts_old, counts_new)
    return rows, {"attribute": attribute, "statistic": statistic, "dof": dof, "p_value": p_value}


def _review_cross_check(pairs: pd.DataFrame, reviews: pd.DataFrame | None) -> tuple[dict, pd.DataFrame]:
    """How OLD's review decisions show up in NEW's labels; adds review columns to ``pairs``."""
    pairs["review_decision"] = None
    pairs["review_new_label"] = None
    pairs["correction_applied"] = False
    relabelled = (pairs["change"] == m.RELABELLED).to_numpy()
    summary = {"has_reviews": reviews is not None, "n_label_wrong": 0, "corrections_applied": 0,
               "corrections_not_applied": 0, "corrections_on_removed_images": 0, "relabels_without_review": int(relabelled.sum()),
               "relabels_against_review": 0}
    if reviews is None or reviews.empty:
        return summary, pairs
    by_id = reviews.set_index(reviews["id"].astype(str))
    ids = pairs["id_old"].astype(object)
    decision = ids.map(lambda i: by_id["decision"].get(i) if i is not None else None)
    new_label = ids.map(lambda i: by_id["new_label"].get(i) if i is not None else None)
    pairs["review_decision"] = decision.to_numpy(dtype=object)
    pairs["review_new_label"] = new_label.where(new_label.notna(), None).to_numpy(dtype=object)
    wrong = (decision == "label_wrong").to_numpy()
    present_new = pairs["row_new"].to_numpy() >= 0
    applied = wrong & present_new & (pairs["label_new"].astype(str).to_numpy() == new_label.astype(str).to_numpy())
    pairs["correction_applied"] = applied
    summary.update({
        "n_label_wrong": int(wrong.sum()),
        "corrections_applied": int(applied.sum()),
        "corrections_not_applied": int((wrong & present_new & ~applied).sum()),
        "corrections_on_removed_images": int((wrong & ~present_new).sum()),
        "relabels_without_review": int((relabelled & (decision != "label_wrong").to_numpy()
                                        & (decision != "label_correct").to_numpy()).sum()),
        "relabels_against_review": int((relabelled & ((decision == "label_correct").to_numpy()
                                                      | (wrong & ~applied))).sum()),
    })
    return summary, pairs


def _find_rate(audit: dict, key: str = "label_error_rate"):
    """The first ``{key: {"estimate", ...}}`` anywhere in ``audit['analyses']`` (verified rates from reviews)."""
    stack = [audit.get("analyses") or {}]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            value = node.get(key)
            if isinstance(value, dict) and "estimate" in value:
                return node
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return None


def _label_rows(old_gm: pd.DataFrame, new_gm: pd.DataFrame, attributes: list, classes: list, *,
                confidence_level: float) -> list[dict]:
    """Disagreement rate old vs new from each audit's own group_metrics rows (either metric name)."""
    def pick(frame):
        rows = frame[frame["metric"].isin(DISAGREEMENT_METRICS)].copy()
        rows["metric"] = "label_disagreement_rate"
        keep = rows["attribute"].isin(["all", *attributes]) & ((rows["class"] == "") | rows["class"].isin(classes))
        return rows[keep].drop_duplicates(["attribute", "group", "class"])

    old, new = pick(old_gm), pick(new_gm)
    if old.empty or new.empty:
        return []
    joined = old.merge(new, on=["attribute", "group", "class"], suffixes=("_old", "_new"))
    x_old = np.round(joined["value_old"].to_numpy(dtype=float) * joined["n_old"].to_numpy(dtype=float))
    x_new = np.round(joined["value_new"].to_numpy(dtype=float) * joined["n_new"].to_numpy(dtype=float))
    n_old = joined["n_old"].to_numpy(dtype=float)
    n_new = joined["n_new"].to_numpy(dtype=float)
    diff, low, high = unpaired_difference_interval(x_old, n_old, x_new, n_new, confidence_level=confidence_level)
    p = fisher_two_sided_p_value(x_old, n_old, x_new, n_new)
    return [{"attribute": r[0], "group": r[1], "class": r[2], "metric": "label_disagreement_rate",
             "scope": EXPLORATORY, "method": UNPAIRED, "n_old": int(n_old[i]), "n_new": int(n_new[i]),
             "old": float(r[3]), "new": float(r[4]), "difference": float(diff[i]),
             "ci_low": float(low[i]), "ci_high": float(high[i]), "p_value": float(p[i]),
             "old_ci_low": float(r[5]), "old_ci_high": float(r[6]), "new_ci_low": float(r[7]), "new_ci_high": float(r[8])}
            for i, r in enumerate(joined[["attribute", "group", "class", "value_old", "value_new", "ci_low_old",
                                          "ci_high_old", "ci_low_new", "ci_high_new"]].itertuples(index=False))]


def _verified_pair(o: dict, n: dict, where: dict, confidence_level: float) -> dict | None:
    """One verified-rate row: each side's own (stratified) estimate and interval, combined square-and-add."""
    keys = ("estimate", "ci_low", "ci_high")
    if any(o.get(k) is None or n.get(k) is None for k in keys):
        return None
    old, old_low, old_high = (float(o[k]) for k in keys)
    new, new_low, new_high = (float(n[k]) for k in keys)
    diff = new - old
    low = diff - math.sqrt((new - new_low) ** 2 + (old_high - old) ** 2)
    high = diff + math.sqrt((new_high - new) ** 2 + (old - old_low) ** 2)
    # test of no change from the combined interval (normal approximation: half-width = z x standard error)
    from scipy import stats

    z = stats.norm.ppf(0.5 + confidence_level / 2)
    se = (high - low) / (2 * z)
    p = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    n_old = int(o.get("reviewed") or o.get("sample_size") or 0)
    n_new = int(n.get("reviewed") or n.get("sample_size") or 0)
    return {**where, "metric": "label_error_rate", "scope": EXPLORATORY, "method": UNPAIRED, "n_old": n_old,
            "n_new": n_new, "old": old, "new": new, "difference": diff, "ci_low": max(low, -1.0),
            "ci_high": min(high, 1.0), "p_value": p, "old_ci_low": old_low, "old_ci_high": old_high,
            "new_ci_low": new_low, "new_ci_high": new_high}


def _verified_rows(old: dict | None, new: dict | None, confidence_level: float) -> list[dict]:
    """Verified label-error rate old vs new (``review --status`` objects): overall, per group and per class
    where both audits have it."""
    if not isinstance(old, dict) or not isinstance(new, dict) or not isinstance(old.get("label_error_rate"), dict) \
            or not isinstance(new.get("label_error_rate"), dict):
        return []
    rows = []
    overall = _verified_pair(old["label_error_rate"], new["label_error_rate"],
                             {"attribute": "all", "group": "all", "class": ""}, confidence_level)
    if overall:
        rows.append(overall)
    for section, key in (("by_group", ("attribute", "group")), ("by_class", ("class",))):
        old_rows = {tuple(str(r.get(k)) for k in key): r for r in old.get(section) or [] if isinstance(r, dict)}
        for r in new.get(section) or []:
            if not isinstance(r, dict):
                continue
            match = old_rows.get(tuple(str(r.get(k)) for k in key))
            if match is None:
                continue
            where = ({"attribute": str(r["attribute"]), "group": str(r["group"]), "class": ""} if section == "by_group"
                     else {"attribute": "all", "group": "all", "class": str(r["class"])})
            row = _verified_pair(match, r, where, confidence_level)
            if row:
                rows.append(row)
    return rows


def _hash_table(images: pd.DataFrame) -> pd.DataFrame | None:
    from audit.analysis.data_quality import REQUIRED_HASH_COLUMNS

    names = [f"image_{h}" for h in REQUIRED_HASH_COLUMNS]
    if not all(n in images.columns for n in names):
        return None
    return images


def _cross_duplicates(old_images: pd.DataFrame, new_images: pd.DataFrame, pairs: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Exact and near copies of OLD images among NEW images that are not the same matched item."""
    pairs["cross_duplicate_of"] = None
    pairs["cross_duplicate_kind"] = None
    result = {"n_exact": 0, "n_near": 0, "n_held_out_copies_of_train": 0, "n_moved_train_to_held_out": 0,
              "near_duplicates_checked": False, "examples": []}
    in_new = pairs["row_new"].to_numpy() >= 0
    row_new = pairs["row_new"].to_numpy()
    row_old = pairs["row_old"].to_numpy()
    partner = np.full(len(new_images), -1, dtype=np.int64)
    partner[row_new[in_new]] = row_old[in_new]
    found_old = np.full(len(new_images), -1, dtype=np.int64)
    kind = np.full(len(new_images), None, dtype=object)
    if "content_hash" in old_images.columns and "content_hash" in new_images.columns:
        first_old = {}
        for position, value in enumerate(old_images["content_hash"].astype(object)):
            if value is not None and value == value:
                first_old.setdefault(value, []).append(position)
        for position, value in enumerate(new_images["content_hash"].astype(object)):
            for candidate in first_old.get(value, ()):
                if candidate != partner[position]:
                    found_old[position] = candidate
                    kind[position] = "exact"
                    break
    fresh_new = pairs["change"].isin([m.ADDED, m.REPLACED]).to_numpy() | pairs["renamed"].to_numpy()
    if fresh_new.any() and _hash_table(old_images) is not None and _hash_table(new_images) is not None:
        from audit.analysis.data_quality import find_data_quality_issues

        fresh = np.flatnonzero(~np.isin(np.arange(len(new_images)), row_new[in_new & (row_old >= 0)
                                                                             & (pairs["change"] != m.REPLACED).to_numpy()]))
        columns = [c for c in old_images.columns if c.startswith("image_")] + ["id", "label", "content_hash"]
        columns = [c for c in dict.fromkeys(columns) if c in new_images.columns and c in old_images.columns]
        combined = pd.concat([old_images[columns], new_images.iloc[fresh][columns]], ignore_index=True)
        rename = {c: c[len("image_"):] for c in combined.columns
                  if c.startswith("image_") and c[len("image_"):].split("_")[0] in ("phash", "dhash", "chash")}
        combined = combined.rename(columns=rename)
        combined["id"] = [f"old:{i}" for i in range(len(old_images))] + [f"new:{i}" for i in fresh]
        try:
            quality = find_data_quality_issues(combined)
        except Exception:  # noqa: BLE001 - near duplicates are an extra; a failure is reported, not fatal
            quality = None
        if quality is not None:
            result["near_duplicates_checked"] = True
            links = quality.pairs
            n_old = len(old_images)
            cross = links[(links["i"] < n_old) & (links["j"] >= n_old)]
            for i, j in zip(cross["i"].to_numpy(), cross["j"].to_numpy()):
                position = fresh[j - n_old]
                if found_old[position] < 0:
                    found_old[position] = i
                    kind[position] = "near"
    split_old = old_images["split"].astype(str).str.lower().to_numpy() if "split" in old_images.columns else None
    split_new = new_images["split"].astype(str).str.lower().to_numpy() if "split" in new_images.columns else None
    held_out_copies = 0
    for position in np.flatnonzero(found_old >= 0):
        source = found_old[position]
        is_leak = split_old is not None and split_new is not None and split_old[source] in TRAIN_SPLITS \
            and split_new[position] in HELD_OUT_SPLITS
        held_out_copies += int(is_leak)
        if len(result["examples"]) < 20:
            result["examples"].append({"id_new": str(new_images["id"].iloc[position]),
                                       "id_old": str(old_images["id"].iloc[source]), "kind": kind[position],
                                       "split_old": None if split_old is None else str(split_old[source]),
                                       "split_new": None if split_new is None else str(split_new[position])})
    moved = 0
    if split_old is not None and split_new is not None:
        both = in_new & (row_old >= 0)
        moved = int(sum(split_old[o] in TRAIN_SPLITS and split_new[n] in HELD_OUT_SPLITS
                        for o, n in zip(row_old[both], row_new[both])))
    result.update({"n_exact": int(np.sum(kind == "exact")), "n_near": int(np.sum(kind == "near")),
                   "n_held_out_copies_of_train": int(held_out_copies), "n_moved_train_to_held_out": moved})
    lookup_id = old_images["id"].astype(str).to_numpy()
    pairs.loc[in_new, "cross_duplicate_of"] = [lookup_id[found_old[r]] if found_old[r] >= 0 else None
                                               for r in row_new[in_new]]
    pairs.loc[in_new, "cross_duplicate_kind"] = [kind[r] for r in row_new[in_new]]
    return result, pairs


def _new_defects(new_images: pd.DataFrame, pairs: pd.DataFrame, attributes: list) -> dict:
    """Defects (``is_<issue>_issue``) of the images NEW adds or replaces, by class and group."""
    issues = [c[3:-6] for c in new_images.columns if c.startswith("is_") and c.endswith("_issue")
              and c not in ("is_label_issue",)]
    fresh_mask = pairs["change"].isin([m.ADDED, m.REPLACED]).to_numpy()
    fresh = pairs.loc[fresh_mask, "row_new"].to_numpy()
    table = new_images.iloc[fresh]
    result = {"n_new_images": int(len(table)), "issues": {}, "by_class": [], "by_group": []}
    for issue in issues:
        flags = table[f"is_{issue}_issue"].fillna(False).astype(bool)
        result["issues"][issue] = int(flags.sum())
        if not flags.any():
            continue
        for label, count in table.loc[flags, "label"].astype(str).value_counts().items():
            result["by_class"].append({"issue": issue, "class": label, "n": int(count)})
        for attribute in attributes:
            for group, count in _labels_of(table.loc[flags, attribute]).value_counts().items():
                result["by_group"].append({"issue": issue, "attribute": attribute, "group": group, "n": int(count)})
    return result


def _percent(value) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f} %"


def _points(value) -> str:
    return f"{100 * value:+.1f} points"


def _where(row) -> str:
    parts = []
    if row["attribute"] != "all":
        parts.append(f"{row['attribute']} = {row['group']}")
    if row["class"]:
        parts.append(f"class {row['class']}")
    return ", ".join(parts) or "overall"


def _for(row) -> str:
    place = _where(row)
    return place if place == "overall" else f"for {place}"


METRIC_WORDS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro-F1",
                "recall": "Recall", "precision": "Precision", "label_disagreement_rate": "Model-label disagreement",
                "top_k_accuracy": "Top-k accuracy", "expected_calibration_error": "Expected calibration error",
                "label_error_rate": "The verified label-error rate"}


def _findings(comparison: dict, rows: pd.DataFrame) -> list[dict]:
    found = []

    def add(severity, weight, text, section):
        found.append({"analysis": section, "severity": severity, "text": text, "weight": float(weight)})

    model = comparison["model"]
    for row in rows.to_dict("records"):
        if row["verdict"] not in (REGRESSED, IMPROVED):
            continue
        primary = row["scope"] == "primary"
        harmful = row["verdict"] == REGRESSED
        word = "fell" if row["difference"] < 0 else "rose"
        text = (f"{METRIC_WORDS.get(row['metric'], row['metric'])} {word} from {_percent(row['old'])} to "
                f"{_percent(row['new'])} {_for(row)} ({_points(row['difference'])}, 95 % CI "
                f"{100 * row['ci_low']:+.1f} to {100 * row['ci_high']:+.1f}; {row['method']}, n = {row['n_new']}): "
                f"{'a significant regression' if harmful else 'a significant improvement'}"
                f"{'' if primary else ' (exploratory)'}.")
        add("high" if harmful and primary else "medium" if harmful or primary else "low",
            (3 if primary else 1) + (1 if harmful else 0) + abs(row["difference"]),
            text, "labels" if row["metric"].startswith("label_") else "model")
    overall = rows[(rows["attribute"] == "all") & (rows["class"] == "") & (rows["metric"] == model.get("primary_metric"))]
    if not overall.empty and overall["verdict"].iloc[0] not in (REGRESSED, IMPROVED):
        r = overall.iloc[0]
        add("info", 2.5, f"{METRIC_WORDS.get(r['metric'], r['metric'])} overall: {_percent(r['old'])} -> "
            f"{_percent(r['new'])} ({_points(r['difference'])}, 95 % CI {100 * r['ci_low']:+.1f} to "
            f"{100 * r['ci_high']:+.1f}; {r['method']}, n = {r['n_new']}): "
            + ("not enough images to decide." if r["verdict"] == INSUFFICIENT else "no evidence of a change."), "model")
    quality = comparison["quality"]["cross_version_duplicates"]
    if quality["n_held_out_copies_of_train"]:
        add("high", 5, f"{quality['n_held_out_copies_of_train']} image(s) in NEW's held-out splits are copies of OLD "
            "training images (leakage across versions).", "quality")
    if quality["n_moved_train_to_held_out"]:
        add("high", 4.5, f"{quality['n_moved_train_to_held_out']} image(s) moved from OLD's training split to a "
            "held-out split in NEW: a model trained on OLD has seen them.", "quality")
    n_copies = quality["n_exact"] + quality["n_near"]
    if n_copies:
        add("medium", 2, f"{n_copies} NEW image(s) are copies of other OLD images ({quality['n_exact']} exact, "
            f"{quality['n_near']} near).", "quality")
    changes = comparison["matching"]["counts"]
    add("info", 2.8, f"Images: {changes['unchanged']} unchanged, {changes['relabelled']} relabelled, "
        f"{changes['replaced']} replaced (same id, new pixels), {changes['added']} added, {changes['removed']} removed.",
        "data")
    reviews = comparison["data"]["reviews"]
    if reviews["has_reviews"]:
        add("medium" if reviews["relabels_without_review"] or reviews["corrections_not_applied"] else "info", 2.7,
            f"Of OLD's {reviews['n_label_wrong']} reviewed label errors, {reviews['corrections_applied']} were corrected "
            f"in NEW as reviewed and {reviews['corrections_not_applied']} were not; "
            f"{reviews['relabels_without_review']} relabel(s) had no review behind them.", "data")
    elif changes["relabelled"]:
        add("low", 1.5, f"OLD has no review decisions, so none of the {changes['relabelled']} relabels can be checked "
            "against a review.", "data")
    for test in comparison["data"]["shift_tests"]:
        if test["p_adjusted"] is not None and test["p_adjusted"] < 1 - comparison["settings"]["confidence_level"]:
            add("medium", 2, f"The shares of {test['attribute']} changed between the versions (chi-square "
                f"{test['statistic']:.1f}, {test['dof']} df, adjusted p = {test['p_adjusted']:.2g}).", "data")
    defects = comparison["quality"]["new_defects"]
    n_defects = sum(defects["issues"].values())
    if n_defects:
        worst = max(defects["issues"], key=defects["issues"].get)
        add("low", 1, f"The {defects['n_new_images']} added or replaced images carry {n_defects} defect flag(s); most "
            f"often {worst} ({defects['issues'][worst]}).", "quality")
    for note in comparison["notes"]:
        add("info", 0.5, note, "notes")
    add("info", 0.4, tests_made_sentence(comparison["multiplicity"]), "multiplicity")
    order = {"high": 0, "medium": 1, "low": 2, "info": 3}
    found.sort(key=lambda f: (order[f["severity"]], -f["weight"]))
    return found


def compare_audits(old, new, *, primary_metric: str | None = None, confidence_level: float | None = None,
                   min_group_size: int | None = None, max_ci_width: float | None = None, n_bootstrap: int = 1000,
                   seed: int = 0, pairing: str = "auto", max_depth: int = 2, verified_old: dict | None = None,
                   verified_new: dict | None = None, probabilities_old=None, probabilities_new=None) -> Comparison:
    """Compare two audits (OLD -> NEW).

    Parameters
    ----------
    old, new : AuditFolder
        As read by the shared folder reader (``audit``, ``images``, ``group_metrics``, ``reviews``).
    primary_metric : str, optional
        The metric of the primary family (default ``accuracy``).
    confidence_level, min_group_size, max_ci_width : optional
        Default: OLD's audit settings (0.95, 30, 0.3).
    n_bootstrap, seed : int
        Bootstrap replicates for non-proportion metrics and their seed.
    pairing : {"auto", "paired", "unpaired"}
        ``auto``: paired on the images both audits score with the same pixels when those are at least
        :data:`MIN_PAIRED_SHARE` of NEW's scored images (and at least ``min_group_size``), else unpaired.
    max_depth : int
        Intersections of up to this many metadata attributes.
    verified_old, verified_new : dict, optional
        Each audit's verified label-error rate (the ``review --status`` object: ``label_error_rate``,
        ``by_group``, ``by_class``), see :func:`audit.compare.folder.verified_status`.
    probabilities_old, probabilities_new : array (N, K), optional
        Each audit's ``probabilities.npy`` (row order = its images, columns = its classes; a memory map is
        fine): with both, top-k accuracy (k = OLD's ``top_k`` setting, default 5, when more classes are shared)
        is compared. Expected calibration error needs only ``images.parquet`` ``confidence``.

    Returns
    -------
    Comparison
    """
    settings_old = _settings(old.audit)
    confidence_level = float(confidence_level or settings_old.get("confidence_level") or 0.95)
    min_group_size = int(min_group_size or settings_old.get("min_group_size") or 30)
    max_ci_width = float(max_ci_width or settings_old.get("max_ci_width") or 0.3)
    primary_metric = primary_metric or "accuracy"
    old_images = old.images.reset_index(drop=True)
    new_images = new.images.reset_index(drop=True)
    classes_old, classes_new = list(old.audit["classes"]), list(new.audit["classes"])
    shared = [c for c in classes_new if c in classes_old]
    notes = []
    pairs, method = m.match_images(old_images, new_images)
    if method == "id":
        notes.append(NOTE_ID_ONLY)
    counts = {change: int((pairs["change"] == change).sum()) for change in m.CHANGES}
    same_pixels = pairs["change"].isin([m.UNCHANGED, m.RELABELLED]).to_numpy()
    if not same_pixels.any():
        notes.append(NOTE_NO_OVERLAP)

    # data ----------------------------------------------------------------------------------------------
    meta_old, pixel_old = _group_attributes(old.audit, old_images)
    meta_new, pixel_new = _group_attributes(new.audit, new_images)
    metadata = [a for a in meta_new if a in meta_old]
    pixel = [a for a in pixel_new if a in pixel_old]
    removed_rows = pairs.loc[pairs["change"] == m.REMOVED, "row_old"].to_numpy()
    removed_mask = np.zeros(len(old_images), dtype=bool)
    removed_mask[removed_rows] = True
    share_rows, shift_tests = [], []
    class_rows, class_test = _share_rows("class", old_images["label"], new_images["label"], removed_mask,
                                         confidence_level=confidence_level)
    shift_tests.append(class_test)
    for attribute in metadata + pixel:
        rows, test = _share_rows(attribute, old_images[attribute], new_images[attribute], removed_mask,
                                 confidence_level=confidence_level)
        share_rows.extend(rows)
        shift_tests.append(test)
    review_summary, pairs = _review_cross_check(pairs, old.reviews)

    # model -----------------------------------------------------------------------------------------------
    has_predictions = ("prediction" in old_images.columns and old_images["prediction"].notna().any(),
                       "prediction" in new_images.columns and new_images["prediction"].notna().any())
    code = {c: i for i, c in enumerate(shared)}
    model_section = {"primary_metric": primary_metric, "method": None, "n_paired": 0, "label_basis": None}
    model_rows = pd.DataFrame(columns=[c for c in ROW_COLUMNS if c not in ("p_adjusted", "insufficient_evidence",
                                                                            "verdict")])
    n_left_out = 0
    if all(has_predictions):
        def codes(values):
            return values.astype(object).map(code).fillna(-1).astype(np.int64).to_numpy()

        top_k = int(((old.analyses.get("group_performance") or {}).get("settings") or {}).get("top_k") or TOP_K)

        def scores(images, probabilities, classes, rows, labels) -> dict:
            """Per-image confidence (ECE) and top-k hits against ``labels`` (codes into ``shared``) of the
            ``rows`` of one audit, where it has them."""
            out = {"confidence": None, "top_k_hits": None}
            if "confidence" in images.columns:
                confidence = pd.to_numeric(images["confidence"], errors="coerce").to_numpy(dtype=float)[rows]
                if confidence.size and np.isfinite(confidence).all():
                    out["confidence"] = confidence
            if probabilities is not None and len(shared) > top_k and probabilities.shape == (len(images), len(classes)):
                columns = np.array([classes.index(c) for c in shared])
                matrix = np.asarray(probabilities[rows], dtype=np.float64)
                label_probability = matrix[np.arange(len(rows)), columns[labels]]
                out["top_k_hits"] = (matrix > label_probability[:, None]).sum(axis=1) < top_k  # ties: the label's favour
            return out

        lab_old, pred_old = codes(old_images["label"]), codes(old_images["prediction"])
        lab_new, pred_new = codes(new_images["label"]), codes(new_images["prediction"])
        scored_new = int(((lab_new >= 0) & new_images["prediction"].notna().to_numpy()).sum())
        common = pairs[same_pixels]
        r_old = common["row_old"].to_numpy()
        r_new = common["row_new"].to_numpy()
        ok = (lab_new[r_new] >= 0) & old_images["prediction"].notna().to_numpy()[r_old] \
            & new_images["prediction"].notna().to_numpy()[r_new]
        r_old, r_new = r_old[ok], r_new[ok]
        n_common = int(r_old.size)
        if pairing == "paired" or (pairing == "auto" and n_common >= min_group_size and scored_new
                                   and n_common >= MIN_PAIRED_SHARE * scored_new):
            method_model = PAIRED
            # pred_old may name a class NEW does not have: it is then simply wrong (-2 never equals a label)
            p_old = np.where(pred_old[r_old] >= 0, pred_old[r_old], -2)
            groups = {a: _labels_of(new_images[a].iloc[r_new]) for a in metadata + pixel}
            side_old = VersionData(lab_new[r_new], p_old, groups, len(shared),
                                   **scores(old_images, probabilities_old, classes_old, r_old, lab_new[r_new]))
            side_new = VersionData(lab_new[r_new], np.where(pred_new[r_new] >= 0, pred_new[r_new], -2), groups,
                                   len(shared),
                                   **scores(new_images, probabilities_new, classes_new, r_new, lab_new[r_new]))
            if n_common < scored_new:
                notes.append(NOTE_PARTIAL_PAIRING.format(n=n_common, share=_percent(n_common / scored_new),
                                                         n_new_only=scored_new - n_common))
            model_section.update(n_paired=n_common, label_basis="new")
            n_left_out = int((~ok).sum())
        else:
            method_model = UNPAIRED
            keep_old = lab_old >= 0
            keep_new = lab_new >= 0
            n_left_out = int((~keep_old).sum() + (~keep_new).sum())
            side_old = VersionData(lab_old[keep_old], np.where(pred_old[keep_old] >= 0, pred_old[keep_old], -2),
                                   {a: _labels_of(old_images[a][keep_old]) for a in metadata + pixel}, len(shared),
                                   **scores(old_images, probabilities_old, classes_old, np.flatnonzero(keep_old),
                                            lab_old[keep_old]))
            side_new = VersionData(lab_new[keep_new], np.where(pred_new[keep_new] >= 0, pred_new[keep_new], -2),
                                   {a: _labels_of(new_images[a][keep_new]) for a in metadata + pixel}, len(shared),
                                   **scores(new_images, probabilities_new, classes_new, np.flatnonzero(keep_new),
                                            lab_new[keep_new]))
            model_section.update(label_basis="own")
        # -2 predictions must not break one-hot encoding: map them to an extra "other" column
        for side in (side_old, side_new):
            side.predictions = np.where(side.predictions < 0, len(shared), side.predictions)
            side.correct = side.labels == side.predictions
        model_section["method"] = method_model
        model_rows = compare_model(side_old, side_new, classes=shared + ["<other>"], method=method_model,
                                   metadata_attributes=metadata, pixel_attributes=pixel,
                                   primary_metric=primary_metric, max_depth=max_depth,
                                   confidence_level=confidence_level, n_bootstrap=n_bootstrap, seed=seed)
        model_rows = model_rows[model_rows["class"] != "<other>"]
    else:
        which = " and ".join(name for name, has in zip(("OLD", "NEW"), has_predictions) if not has)
        notes.append(NOTE_NO_MODEL.format(which=which))
        model_section["method"] = "none"
    if set(classes_old) != set(classes_new):
        notes.append(NOTE_CLASSES.format(n=len(shared), only_old=", ".join(c for c in classes_old if c not in shared) or "none",
                                         only_new=", ".join(c for c in classes_new if c not in shared) or "none",
                                         n_left=n_left_out))

    # labels -----------------------------------------------------------------------------------------------
    label_rows = _label_rows(old.group_metrics, new.group_metrics, metadata, shared, confidence_level=confidence_level)
    verified = _verified_rows(verified_old if verified_old is not None else _find_rate(old.audit),
                              verified_new if verified_new is not None else _find_rate(new.audit), confidence_level)
    label_rows.extend(verified)
    all_rows = pd.concat([model_rows, pd.DataFrame(label_rows, columns=model_rows.columns)], ignore_index=True) \
        if label_rows else model_rows
    # one multiplicity story for the whole comparison (audit.compare.multiplicity): metric rows, label rows,
    # share changes and shift tests are adjusted together, primary (Holm) and exploratory (BH) families
    data_tests = class_rows + share_rows + shift_tests
    all_rows, data_adjusted, multiplicity = decide_rows(
        all_rows.reset_index(drop=True), [t["p_value"] for t in data_tests], min_group_size=min_group_size,
        max_ci_width=max_ci_width, confidence_level=confidence_level, primary_metric=primary_metric)
    for test, p in zip(data_tests, data_adjusted):
        tested = bool(np.isfinite(p))
        test["scope"] = EXPLORATORY if tested else ""
        test["p_adjusted"] = float(p) if tested else None
    is_label = all_rows["metric"].isin(["label_disagreement_rate", "label_error_rate"])
    model_section["rows"] = all_rows[~is_label].to_dict("records")
    model_section["verdict_counts"] = all_rows[~is_label]["verdict"].value_counts().to_dict()

    # quality ----------------------------------------------------------------------------------------------
    cross, pairs = _cross_duplicates(old_images, new_images, pairs)
    defects = _new_defects(new_images, pairs, metadata)

    comparison = {
        "schema_version": COMPARISON_SCHEMA_VERSION,
        "kind": "comparison",
        "tool": {"name": "imagefair", "version": _version()},
        "old": _side(old), "new": _side(new),
        "classes": {"shared": shared, "only_old": [c for c in classes_old if c not in shared],
                    "only_new": [c for c in classes_new if c not in shared]},
        "settings": {"confidence_level": confidence_level, "min_group_size": min_group_size,
                     "max_ci_width": max_ci_width, "n_bootstrap": n_bootstrap, "seed": seed, "pairing": pairing,
                     "primary_metric": primary_metric, "max_depth": max_depth,
                     "correction": {"primary": "holm", "exploratory": "bh"}},
        "matching": {"method": method, "counts": counts, "n_old": len(old_images), "n_new": len(new_images),
                     "n_same_pixels": int(same_pixels.sum()),
                     "n_renamed": int(pairs["renamed"].sum())},
        "data": {"class_shares": class_rows, "group_shares": share_rows, "shift_tests": shift_tests,
                 "reviews": review_summary, "attributes": metadata, "pixel_attributes": pixel},
        "labels": {"rows": all_rows[is_label].to_dict("records"),
                   "verified_available": bool(verified),
                   "note": "label_disagreement_rate is the share of images whose label the model confidently "
                           "disagrees with (confident learning); it is not a label-error rate. label_error_rate "
                           "comes only from reviews of a random sample."},
        "model": model_section,
        "quality": {"cross_version_duplicates": cross, "new_defects": defects},
        "multiplicity": multiplicity,
        "notes": notes,
        "errors": [],
    }
    details = _findings(comparison, all_rows)
    comparison["finding_details"] = details
    comparison["findings"] = [f["text"] for f in details]
    from audit.types import json_safe as to_json_safe

    comparison = to_json_safe(comparison)
    changes = pairs.drop(columns=["row_old", "row_new"])
    order = ["change", "id_old", "id_new", "renamed", "label_old", "label_new", "prediction_old", "prediction_new",
             "content_hash_old", "content_hash_new", "split_old", "split_new", "path_old", "path_new",
             "review_decision", "review_new_label", "correction_applied", "cross_duplicate_of", "cross_duplicate_kind"]
    changes = changes[order]
    for column in order:
        if column not in ("renamed", "correction_applied"):
            changes[column] = changes[column].astype(object).where(changes[column].notna(), None)
    return Comparison(comparison=comparison, image_changes=changes)


def _version() -> str:
    try:
        from audit import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


def _side(folder) -> dict:
    audit = folder.audit
    provenance = audit.get("provenance") or {}
    model = audit.get("model") or {}
    return {"path": str(folder.path), "schema_version": audit.get("schema_version"), "kind": audit.get("kind"),
            "data_root": (audit.get("dataset") or {}).get("root"),
            "n_images": (audit.get("dataset") or {}).get("n_images"), "classes": audit.get("classes"),
            "data_hash": provenance.get("data_hash"), "model_sha256": model.get("sha256") if model else None,
            "has_reviews": folder.reviews is not None}
