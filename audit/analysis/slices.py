"""Weak-slice discovery: attribute combinations whose accuracy is significantly below the rest of the data.

Procedure (:func:`find_weak_slices`)
------------------------------------
1. *Try* every slice = one value of each of 1..``max_depth`` group attributes (``colour = red & size =
   small``) that holds at least ``min_slice_size`` images and leaves some images outside it.
2. Test each against the rest of the data (images outside the slice): one-sided Fisher exact test
   that its accuracy is lower. Adjust the p-values of *every slice tried* together (Holm by default, or
   Benjamini-Hochberg); a slice is *significant* when its adjusted p-value is below ``alpha``.
3. Child explained by its parent: a significant slice of depth >= 2 is dropped unless it is also
   significantly worse than the rest of *each significant parent* (a parent = the slice with one of its
   conditions removed; the test compares the child with the parent's other images; these child-vs-parent
   p-values are adjusted together with the same correction).
4. Explained by other slices: the remaining slices are visited deepest first (then most significant
   first); a slice that overlaps slices already accepted is dropped when its images outside them are not
   significantly worse than the images outside all of them — its weakness is theirs (e.g. the diluted
   parents ``a = a1`` and ``b = b2`` of a weak ``a1 & b2``, or ``c = c0``, a third of which lies in it).
   "Significantly" on the same terms as step 2: the remainder's one-sided Fisher p-value takes the slice's
   place in the family of every slice tried and must stay below ``alpha`` after adjustment.
5. Rank what remains by ``effect x n`` (accuracy points lost x images affected), largest first.

Because every reported slice passed step 2, the chance of reporting any slice in data without a weak
slice stays at most ``alpha`` (Holm; the Fisher test is exact, so small slices with accuracy near 1 do not
inflate it the way a z test's normal approximation does).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from audit.analysis._groups import codes_for, group_labels
from audit.analysis._stats import adjust_p_values, fisher_p_value_lower, wilson_interval
from audit.errors import InputError
from audit.types import INTERSECTION_SEPARATOR, json_safe

ERROR_CORRECT_SHAPE = ("correct must be a 1-D array with one boolean per image (prediction == label), got "
                       "shape {shape}")
ERROR_CORRECT_VALUES = "correct must hold booleans (or 0/1), got values such as {value!r}: pass labels == predictions"
ERROR_GROUPS_LENGTH = ("groups has {rows} rows but correct has {n} entries: pass one row of group attributes per "
                       "image, in the same order")
ERROR_SETTING = "{name} must be {what}, got {value!r}"


@dataclass(frozen=True)
class SliceResult:
    """Weak slices found by :func:`find_weak_slices`.

    Attributes
    ----------
    slices : tuple of dict
        Reported slices, ranked by ``effect x n`` (largest first). Keys: ``attributes`` (list of attribute
        names), ``attribute`` (them joined with `` & ``), ``group`` (the values joined with `` & ``),
        ``depth``, ``n`` (images in the slice), ``accuracy`` (of the slice), ``rest_accuracy`` (of the images
        outside it), ``effect`` (``rest_accuracy - accuracy``), ``score`` (``effect x n``), ``p_value``
        (one-sided, slice lower than rest), ``p_value_adjusted`` (over every slice tried), ``ci_low``,
        ``ci_high`` (Wilson interval of the slice's accuracy at ``1 - alpha``).
    n_tried : int
        Slices tested (large enough and not the whole data set).
    n_significant : int
        Slices significant before the explained-by-parent/child filters.
    explained : tuple of dict
        Significant slices left out, with ``attribute``, ``group``, ``reason`` (``"parent"``: not
        worse than a significant parent; ``"children"``: its weakness lies in reported deeper slices inside it;
        ``"overlap"``: in reported slices overlapping it) and ``by`` (the slices, as ``attribute = group``
        strings, that explain them).
    settings : dict
        Settings used.
    """

    slices: tuple = field(default_factory=tuple)
    n_tried: int = 0
    n_significant: int = 0
    explained: tuple = field(default_factory=tuple)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe dict for ``audit.json`` (section ``weak_slices``)."""
        return _json_safe({"settings": self.settings, "n_tried": self.n_tried, "n_significant": self.n_significant,
                           "slices": [dict(s) for s in self.slices], "explained": [dict(e) for e in self.explained]})


_json_safe = json_safe  # one conversion for every section of audit.json


def _validate(correct, groups, settings):
    correct = np.asarray(correct)
    if correct.ndim != 1:
        raise InputError(ERROR_CORRECT_SHAPE.format(shape=correct.shape))
    if correct.dtype != bool:
        values = pd.unique(correct.ravel())
        bad = [v for v in values if not (isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1))]
        if bad:
            raise InputError(ERROR_CORRECT_VALUES.format(value=bad[0].item() if hasattr(bad[0], "item") else bad[0]))
        correct = correct.astype(bool)
    if groups.shape[1] == 0:
        # no group attributes: a column-less frame (``pd.DataFrame({})`` has 0 rows) means "no groups"
        groups = pd.DataFrame(index=range(correct.size))
    if len(groups) != correct.size:
        raise InputError(ERROR_GROUPS_LENGTH.format(rows=len(groups), n=correct.size))
    checks = (
        ("max_depth", lambda v: isinstance(v, (int, np.integer)) and v >= 1, "an integer >= 1"),
        ("min_slice_size", lambda v: isinstance(v, (int, np.integer)) and v >= 1, "an integer >= 1"),
        ("alpha", lambda v: isinstance(v, float) and 0 < v < 1, "a number strictly between 0 and 1"),
        ("correction", lambda v: v in ("holm", "bh"), "'holm' or 'bh'"),
    )
    for name, ok, what in checks:
        if not ok(settings[name]):
            raise InputError(ERROR_SETTING.format(name=name, what=what, value=settings[name]))
    return correct, groups.reset_index(drop=True)


def find_weak_slices(correct: np.ndarray, *, groups: pd.DataFrame, max_depth: int = 3, min_slice_size: int = 30,
                     alpha: float = 0.05, correction: str = "holm") -> SliceResult:
    """Find attribute combinations (slices) with significantly lower accuracy than the rest of the data.

    Parameters
    ----------
    correct : ndarray of bool, shape (n,)
        Whether each image's prediction equals its label.
    groups : DataFrame, n rows
        One column per group attribute (missing values form the group ``<missing>``).
    max_depth : int
        Largest number of attributes combined in one slice (default 3).
    min_slice_size : int
        Slices with fewer images are not tried.
    alpha : float
        Significance level of the family-wise (Holm) or false-discovery (BH) control over every slice tried.
    correction : {"holm", "bh"}

    Returns
    -------
    SliceResult
        See the module docstring for the procedure and :class:`SliceResult` for the fields.
    """
    settings = {"max_depth": max_depth, "min_slice_size": min_slice_size, "alpha": alpha, "correction": correction}
    correct, groups = _validate(correct, groups, settings)
    n_total = correct.size
    x_total = int(correct.sum())
    attributes = [str(c) for c in groups.columns]
    codes, names = {}, {}
    for attribute in attributes:
        codes[attribute], names[attribute] = codes_for(group_labels(groups[attribute]))

    # 1-2. Every slice with its counts; test the ones that are tried.
    counts: dict[tuple, tuple[int, int]] = {}
    for depth in range(1, min(max_depth, len(attributes)) + 1):
        for combo in combinations(attributes, depth):
            key_code = np.zeros(n_total, dtype=np.int64)
            radix = []
            for attribute in combo:
                size = len(names[attribute])
                key_code = key_code * size + codes[attribute]
                radix.append(size)
            sizes = np.bincount(key_code, minlength=int(np.prod(radix)))
            rights = np.bincount(key_code, weights=correct, minlength=sizes.size)
            for flat in np.flatnonzero(sizes):
                values = np.unravel_index(flat, radix)
                key = tuple((attribute, names[attribute][int(v)]) for attribute, v in zip(combo, values))
                counts[key] = (int(round(rights[flat])), int(sizes[flat]))
    tried = [key for key, (_, n) in counts.items() if n >= min_slice_size and n < n_total]
    x = np.array([counts[key][0] for key in tried], dtype=float)
    n = np.array([counts[key][1] for key in tried], dtype=float)
    p_values = fisher_p_value_lower(x, n, x_total - x, n_total - n) if tried else np.array([])
    adjusted = adjust_p_values(p_values, method=correction) if tried else np.array([])
    significant = {key: i for i, key in enumerate(tried) if adjusted[i] < alpha}

    # 3. Drop children that their significant parent explains.
    pairs = []
    for key in significant:
        if len(key) < 2:
            continue
        for drop in range(len(key)):
            parent = key[:drop] + key[drop + 1:]
            if parent in significant:
                pairs.append((key, parent))
    pair_p = np.array([
        fisher_p_value_lower(counts[c][0], counts[c][1], counts[p][0] - counts[c][0], counts[p][1] - counts[c][1])
        for c, p in pairs], dtype=float)
    pair_p = np.where(np.isnan(pair_p), 1.0, pair_p)  # child == parent: nothing beyond the parent
    pair_adjusted = adjust_p_values(pair_p, method=correction) if pairs else np.array([])
    explained = {}
    for (child, parent), q in zip(pairs, pair_adjusted):
        if q >= alpha:
            explained.setdefault(child, ("parent", []))[1].append(parent)
    kept = [key for key in significant if key not in explained]

    # 4. Drop slices whose weakness lies entirely in other (deeper, or more significant) reported slices.
    label_of = {attribute: np.asarray(names[attribute], dtype=object)[codes[attribute]] for attribute in attributes}

    def mask_of(key):
        mask = np.ones(n_total, dtype=bool)
        for attribute, value in key:
            mask &= label_of[attribute] == value
        return mask

    accepted: list[tuple] = []
    masks: dict[tuple, np.ndarray] = {}
    for key in sorted(kept, key=lambda k: (-len(k), p_values[significant[k]], k)):
        inside = mask_of(key)
        overlapping = [other for other in accepted if (masks[other] & inside).any()]
        if overlapping:
            covered = np.zeros(n_total, dtype=bool)
            for other in overlapping:
                covered |= masks[other]
            remainder = inside & ~covered
            outside = ~inside & ~covered
            n_rem = int(remainder.sum())
            p = fisher_p_value_lower(correct[remainder].sum(), n_rem, correct[outside].sum(),
                                     int(outside.sum())) if n_rem else np.nan
            # The remainder must be a discovery on the same terms as any slice tried: put its p-value in the
            # slice's place in the family of step 2 and adjust again.
            family = p_values.copy()
            family[significant[key]] = 1.0 if np.isnan(p) else float(p)
            if not adjust_p_values(family, method=correction)[significant[key]] < alpha:
                descendants = all(set(key) < set(other) for other in overlapping)
                explained[key] = ("children" if descendants else "overlap", overlapping)
                continue
        accepted.append(key)
        masks[key] = inside
    kept = [key for key in kept if key not in explained]

    low, high = wilson_interval(x, n, confidence_level=1.0 - alpha) if tried else (np.array([]), np.array([]))
    reported = []
    for key in kept:
        i = significant[key]
        accuracy = x[i] / n[i]
        rest_accuracy = (x_total - x[i]) / (n_total - n[i])
        effect = rest_accuracy - accuracy
        reported.append({
            "attributes": [a for a, _ in key], "attribute": INTERSECTION_SEPARATOR.join(a for a, _ in key),
            "group": INTERSECTION_SEPARATOR.join(v for _, v in key), "depth": len(key), "n": int(n[i]),
            "accuracy": float(accuracy), "rest_accuracy": float(rest_accuracy), "effect": float(effect),
            "score": float(effect * n[i]), "p_value": float(p_values[i]), "p_value_adjusted": float(adjusted[i]),
            "ci_low": float(low[i]), "ci_high": float(high[i]),
        })
    reported.sort(key=lambda s: (-s["score"], s["attribute"], s["group"]))
    explained_list = [{"attribute": INTERSECTION_SEPARATOR.join(a for a, _ in key),
                       "group": INTERSECTION_SEPARATOR.join(v for _, v in key), "reason": reason,
                       "by": sorted(_describe(other) for other in by)}
                      for key, (reason, by) in sorted(explained.items(), key=lambda item: (len(item[0]), item[0]))]
    return SliceResult(slices=tuple(reported), n_tried=len(tried), n_significant=len(significant),
                       explained=tuple(explained_list), settings=dict(settings))


def _describe(key) -> str:
    return INTERSECTION_SEPARATOR.join(a for a, _ in key) + " = " + INTERSECTION_SEPARATOR.join(v for _, v in key)
