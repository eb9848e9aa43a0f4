"""Data quality: duplicates, train/test leakage, outliers and image defects, broken down by class and group.

Input is one row per image with the engine's pixel attributes (:mod:`audit.analysis.image_properties`)
and perceptual hashes (:mod:`audit.analysis.hashing`), both computed in the pipeline's single decoding
pass; nothing here decodes an image or recomputes an attribute.

Per-image issues (``per_image``: ``is_<issue>_issue`` and ``<issue>_score`` in [0, 1], lower = worse)
-----------------------------------------------------------------------------------------------------
Every score is 0.5 exactly at its flagging threshold, below 0.5 for flagged images and 1 for images far
from it, so scores compare across issues.

``exact_duplicate``
    Another row has the same ``content_hash`` (sha256 of the file bytes). Score 0 when flagged, else 1.
``near_duplicate``
    Linked to another row (connected components of the links give ``duplicate_set``; every member is
    flagged). Two images are linked when any of these holds:

    * exact copies (same ``content_hash``);
    * hashes, whole or 95 % centre (all three hashes must agree in one alignment): for one of (whole of
      ``i``, whole of ``j``), (centre of ``i``, whole of ``j``), (whole of ``i``, centre of ``j``), the
      ``phash`` distance <= ``phash_max_distance``, **and** ``dhash`` <= ``dhash_max_distance`` **and**
      ``chash`` <= ``chash_max_distance`` (16, 14, 12 of 64 bits). Candidates come from multi-index hashing
      on ``phash`` stacked with ``phash_centre``
      (:func:`audit.analysis.near_duplicates.find_near_duplicate_pairs`), which finds every pair within
      ``phash_max_distance``; the other two hashes confirm them;
    * hashes, 90 % corner crops (when the ``_nw``/``_ne``/``_sw``/``_se`` columns are present): for the whole
      of one image against one of the four 90 % corner crops of the other (either way round), ``phash`` <=
      ``corner_phash_max_distance``, ``dhash`` <= ``corner_dhash_max_distance`` and ``chash`` <=
      ``corner_chash_max_distance`` (12, 10, 10: tighter, because eight more alignments give unrelated
      pairs eight more chances). Candidates from a second multi-index search on ``phash`` stacked with the
      four corner ``phash`` columns. This finds 90 % crops, centred or not, without embeddings. Both
      searches compare whole-image hashes with each other and with the region hashes, never two region
      hashes (``n_queries``).

      Each search compares every pair directly when that is cheaper (up to some tens of thousands of
      images: :func:`audit.analysis.near_duplicates.direct_search_is_cheaper`; such a search fits the budget
      at any radius when its pairs are at most ``DIRECT_SEARCH_ADVANTAGE * max_hash_comparisons``), else by
      multi-index hashing, whose cost grows with the square of the number of images at its radius; when its
      comparisons (counted exactly beforehand; radii whose expected cost on uniform hashes is already over
      budget are skipped uncounted) plus its sorting work exceed ``max_hash_comparisons``, that radius is
      lowered until it fits,
      ``settings["phash_search_distance"]`` / ``settings["corner_phash_search_distance"]`` (None without
      corner columns) record the radii used and a finding says so (resizes and re-encodes sit within 4 bits
      and are still found; crops may not be). Defaults were measured on the CIFAR-10 test JPEGs
      (tests/data/test_data_quality_cifar.py): planted 0.5x / 2x resizes, JPEG q50 re-encodes, 95 % crops
      and 90 % crops (centred or at a random offset) are found with recall 0.975-1.0 at precision >= 0.99,
      and the untouched originals get fewer links (122) than under the earlier rule without corners (130).

      Crowding bound: in both searches a hash keeps at most ``MAX_LINKS_PER_HASH`` (256) links to later
      hashes, those nearest in row order (:data:`audit.analysis.near_duplicates.MAX_LINKS_PER_HASH`), so a
      cluster of thousands of mutual near duplicates costs memory and verification in proportion to its size,
      not its square, and is still one duplicate set. What it can miss: the link between two images of such a
      cluster that are not connected through others, and an image's closest link (its score can come from a
      farther one). Its comparisons are counted in the budget like any others, so a very large cluster
      narrows the search radius (and the finding above says so). ``summary["n_hash_pairs_bounded"]`` counts
      the pairs dropped (an upper bound: a pair met in several passes counts each time),
      ``settings["max_links_per_hash"]`` records the bound, and a finding says so when it is not 0;
    * embeddings (when given): cosine similarity >= ``embedding_similarity_threshold`` (0.995) among each
      image's ``embedding_k`` nearest neighbours. The default is strict on purpose: a classifier's
      penultimate features describe the class, not the instance. Measured with the CIFAR-10 ResNet-20 on the
      10,000 test JPEGs: 38,680 links between distinct images at 0.95, 1,084 at 0.98, 9 at 0.99, none at
      0.995; a 90 % crop sits at cosine distance 0.058 (median) from its source, farther than the typical
      nearest *other* image (0.036), so no threshold finds crops from such features (the corner rule
      above finds them from the pixels instead). Instance-level
      embeddings (self-supervised or retrieval models) can use a lower threshold. The neighbours are exact up
      to ``EMBEDDING_EXACT_MAX_PAIRS`` (2e9) pairs of images (about 44,700 images), above that approximate
      (an HNSW graph, ``n log n``; :data:`audit.analysis.near_duplicates.EMBEDDING_EXACT_MAX_PAIRS`), with
      recall about 0.99 of the true nearest neighbours: an embedding link can be missed and the outlier
      distance can come out slightly larger. ``settings["embedding_search"]`` is ``exact`` or
      ``approximate_hnsw`` and a finding says when it was approximate.

    Score: ``d / (2 (phash_max_distance + 1))`` with ``d`` the smallest linked ``phash`` distance (0 for
    exact copies), or ``(1 - s) / (2 (1 - threshold))`` for an embedding link of similarity ``s`` (the
    smaller of the two); 1 for images without links.
``outlier`` (only with embeddings)
    Mean cosine distance ``d`` to the ``embedding_k`` nearest other images above the
    ``outlier_percentile``-th percentile ``t`` of that distance over the data set (a relative rule: by
    default the 1 % most isolated images). Score ``0.5 ** (d / t)``.
``dark`` / ``light``
    ``image_brightness`` (mean luminance, 0..1) below ``dark_threshold`` (0.10) / above ``light_threshold``
    (0.90): absolute, the same on any data set. Scores ``min(1, b / (2 dark))`` and
    ``min(1, (1 - b) / (2 (1 - light)))``.
``blurry``
    ``image_sharpness`` (variance of the Laplacian on 0..255 gray levels at the engine's reference scale)
    below ``blurry_threshold`` (100, the engine's own ``blurry`` bin and the usual focus threshold).
    Score ``min(1, s / (2 threshold))``. Not flagged (score NaN) where sharpness is undefined (< 3 px).
``low_information``
    ``image_contrast`` (RMS of luminance, 0..1) below ``low_information_threshold`` (0.02): a nearly flat
    image. Score ``min(1, c / (2 threshold))``.
``grayscale``
    ``image_is_grayscale`` (the engine's test). Score 0 when flagged, else 1.
``odd_size``
    Size relative to the data set: ``r = sqrt(width * height) / median(sqrt(width * height))``, flagged when
    ``r < 1 / odd_size_factor`` or ``r > odd_size_factor`` (2: half or double the typical side). Score
    ``0.5 ** (|log r| / log factor)``. Relative on purpose: "tiny" means tiny for this data set.
``odd_aspect_ratio``
    ``a = max(w / h, h / w)`` above ``odd_aspect_ratio_threshold`` (2.0; absolute). Score
    ``0.5 ** (log a / log threshold)``.

Leakage
-------
Linked pairs whose two images are in different ``split`` values, counted per split pair and listed.

Rates by class and group (``group_table``, contract ``group_metrics`` columns)
-----------------------------------------------------------------------------
Metric ``issue_rate:<issue>`` (share of flagged images; higher is worse) for the whole data set (attribute
``all``, group ``all``, class ``""``), for every class (attribute ``all``, group ``all``, class = the class)
and for every group of every attribute given in ``group_labels`` (class ``""``). Wilson intervals.
``insufficient_evidence`` when ``n < min_group_size`` or a proportion from ``n`` images could have an
interval wider than ``max_ci_width`` (a rule on ``n`` only). Each class and each group is tested against
the rest of the data (one-sided Fisher exact test: is the rate higher than in the rest?; raw p-value in
``p_value``, the rest's rate in ``rest_value``); provisional verdicts adjust with ``correction`` (Holm by
default) within one family = one issue x (the classes, or the groups of one attribute), over the rows
with sufficient evidence. In an audit every row is re-adjusted audit-wide
(:mod:`audit.analysis.multiplicity`) and the concentration sentences are re-derived from the final rows
(:func:`concentration_findings`). ``verdict``: ``worse_than_rest`` when the adjusted p-value is below ``1 - confidence_level``,
else ``no_evidence_of_gap``; ``insufficient_data`` exactly when ``insufficient_evidence`` (whole-data-set
rows included); otherwise empty on the whole-data-set rows (no test applies).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.analysis._groups import group_labels as normalise_group_labels
from audit.analysis._stats import adjust_p_values, fisher_p_value_higher, wilson_interval
from audit.analysis._table import (VERDICT_INSUFFICIENT, VERDICT_NO_GAP, VERDICT_NONE, VERDICT_WORSE,
                                   coerce_group_metrics, empty_group_metrics, flag_insufficient_evidence)
from audit.analysis.near_duplicates import (DIRECT_SEARCH_ADVANTAGE, DIRECT_SEARCH_MAX_PAIRS, MAX_LINKS_PER_HASH,
                                            all_pairs_comparisons,
                                            compare_all_pairs, connected_components, count_bucket_comparisons,
                                            direct_search_is_cheaper, expected_bucket_comparisons,
                                            find_embedding_neighbours, find_near_duplicate_pairs, popcount,
                                            sorting_work, unique_sorted)
from audit.analysis.hashing import CORNERS, HASH_NAMES
from audit.errors import InputError
from audit.types import json_safe

ERROR_MISSING_COLUMNS = ("the image table has no column(s) {columns}: compute the pixel attributes "
                         "(audit.analysis.image_properties) and perceptual hashes (audit.analysis.hashing) for "
                         "every image first")
ERROR_EMPTY = "there are no images to check: the image table is empty"
ERROR_DUPLICATE_IDS = "the image table has duplicate id {value!r} (column id): ids must be unique"
ERROR_EMBEDDINGS_ROWS = ("embeddings has {rows} rows but there are {n} images: pass one embedding per image, in "
                         "the order of the image table")
ERROR_GROUP_LENGTH = ("group_labels[{name!r}] has {rows} values but there are {n} images: pass one group label "
                      "per image, in the order of the image table")
ERROR_UNKNOWN_LABEL = ("row {row} (id {id!r}) has label {label!r}, which is not in classes: pass every class "
                       "name in classes")
ERROR_SETTING = "{name} must be {what}, got {value!r}"
#: Finding (not an error) when the hash search had to be narrowed to fit ``max_hash_comparisons``.
ERROR_SEARCH_NARROWED = ("The near-duplicate hash search was narrowed to fit its time budget: hashes were compared "
                         "up to {used} bits apart instead of {wanted}, so cropped or heavily edited copies may be "
                         "missed (raise max_hash_comparisons, or give embeddings).")
#: Finding when the crowding bound (:data:`audit.analysis.near_duplicates.MAX_LINKS_PER_HASH`) left pairs out.
FINDING_LINKS_BOUNDED = ("Near-duplicate clusters were too crowded to list every pair: each image kept at most "
                         "{cap} hash links per search and {n_pairs} pairs were dropped (at most; a pair met in several "
                         "passes counts each time). Such clusters are still found as whole duplicate sets, but an "
                         "image's score can come from a farther link than its closest.")
#: Finding when embedding neighbours came from the approximate (HNSW) search.
FINDING_EMBEDDING_APPROXIMATE = ("Embedding neighbours of the {n} images were found approximately (HNSW graph; "
                                 "exact search is quadratic): about 1 % of true nearest neighbours can be missed, "
                                 "so an embedding near-duplicate link can be missed and outlier distances can come "
                                 "out slightly larger.")
ERROR_HASH_FLOAT = ("column {column} holds floating-point numbers, which cannot store 64-bit hashes exactly: keep "
                    "the hashes of audit.analysis.hashing.compute_perceptual_hashes as unsigned 64-bit integers "
                    "(and no missing values)")
ERROR_BAD_HASH = ("column {column} holds a value that is not a 64-bit hash (row {row}): store the hashes of "
                  "audit.analysis.hashing.compute_perceptual_hashes as unsigned 64-bit integers")

#: Issues in the order they appear in tables and summaries.
ISSUES = ("exact_duplicate", "near_duplicate", "outlier", "dark", "light", "blurry", "low_information",
          "grayscale", "odd_size", "odd_aspect_ratio")

#: Issue names as words, for findings.
ISSUE_WORDS = {
    "exact_duplicate": "Exact-duplicate", "near_duplicate": "Near-duplicate", "outlier": "Outlier",
    "dark": "Dark", "light": "Light", "blurry": "Blurry", "low_information": "Low-information",
    "grayscale": "Grayscale", "odd_size": "Odd-size", "odd_aspect_ratio": "Odd-aspect-ratio",
}

#: Pixel attributes the detectors read.
PROPERTY_COLUMNS = ("image_width", "image_height", "image_brightness", "image_contrast", "image_sharpness",
                    "image_is_grayscale")
#: Hash columns the duplicate search reads (from :func:`audit.analysis.hashing.compute_perceptual_hashes`).
HASH_COLUMNS = HASH_NAMES
#: Hash columns without which the search cannot run; the corner-crop ones are optional (module docstring).
REQUIRED_HASH_COLUMNS = ("phash", "dhash", "chash", "phash_centre", "dhash_centre", "chash_centre")
#: Corner-crop hash columns (``phash_nw`` ... ``chash_se``); the corner rule runs when all are present.
CORNER_HASH_COLUMNS = tuple(name for name in HASH_NAMES if name not in REQUIRED_HASH_COLUMNS)

DEFAULT_DARK_THRESHOLD = 0.10
DEFAULT_LIGHT_THRESHOLD = 0.90
DEFAULT_BLURRY_THRESHOLD = 100.0
DEFAULT_LOW_INFORMATION_THRESHOLD = 0.02
DEFAULT_ODD_SIZE_FACTOR = 2.0
DEFAULT_ODD_ASPECT_RATIO_THRESHOLD = 2.0
DEFAULT_PHASH_MAX_DISTANCE = 16
DEFAULT_DHASH_MAX_DISTANCE = 14
DEFAULT_CHASH_MAX_DISTANCE = 12
DEFAULT_CORNER_PHASH_MAX_DISTANCE = 12
DEFAULT_CORNER_DHASH_MAX_DISTANCE = 10
DEFAULT_CORNER_CHASH_MAX_DISTANCE = 10
DEFAULT_EMBEDDING_SIMILARITY_THRESHOLD = 0.995
DEFAULT_EMBEDDING_K = 10
DEFAULT_OUTLIER_PERCENTILE = 99.0
#: Work budget of each near-duplicate hash search, in hash comparisons (sorting work included, see
#: :func:`audit.analysis.near_duplicates.sorting_work`): about 20 s on one core of a 2024 server.
DEFAULT_MAX_HASH_COMPARISONS = 2_000_000_000

#: ``metrics`` entries for ``audit.json`` (direction and definition of each metric this module writes).
METRIC_INFO = {f"issue_rate:{issue}": {"higher_is_better": False,
                                        "description": f"share of images flagged with the {issue} issue"}
               for issue in ISSUES}

#: Link kinds in :attr:`DataQualityResult.pairs`.
LINK_EXACT, LINK_HASH, LINK_EMBEDDING = "exact", "hash", "embedding"


@dataclass(frozen=True)
class DataQualityResult:
    """Everything :func:`find_data_quality_issues` found.

    Attributes
    ----------
    per_image : DataFrame
        One row per input row, same order: ``id``, then ``is_<issue>_issue`` (bool) and ``<issue>_score``
        (float in [0, 1], lower = worse; NaN where undefined) for every issue in ``issues``, then
        ``duplicate_set`` (object: the set's id as a zero-padded string, "0", "1", ... or "007" when there
        are hundreds of sets, numbered in order of each set's first row; None for images in no set).
    group_table : DataFrame
        Contract ``group_metrics`` columns, metric ``issue_rate:<issue>`` (module docstring).
    pairs : DataFrame
        Every near-duplicate link: ``i``, ``j`` (row positions, i < j), ``id_a``, ``id_b``, ``kind``
        (``exact``, ``hash`` or ``embedding``: the strongest evidence), ``hash_distance`` (``phash``
        distance in the linking alignment, the smallest if several; 0 for exact copies; <NA> for
        embedding-only links), ``similarity`` (cosine, NaN without
        embeddings).
    leakage : dict
        ``n_pairs``; ``by_split_pair``: ``[{"split_a", "split_b", "n_pairs"}]`` (split names sorted within a
        pair); ``pairs``: ``[{"id_a", "split_a", "id_b", "split_b", "kind", "hash_distance",
        "similarity"}]``. Empty counts when there is no ``split`` column.
    summary : dict
        ``n_images``; ``issues``: ``{issue: number of flagged images}``; ``n_duplicate_sets``;
        ``n_hash_pairs_bounded`` (hash pairs the crowding bound left out, module docstring);
        ``n_images_in_duplicate_sets``; ``n_exact_duplicate_groups`` (distinct content hashes held by more
        than one row).
    findings : list of str
        Plain sentences: the ``max_findings`` largest concentrations (rows with verdict ``worse_than_rest``,
        ranked by the rate ratio to the rest with half a count added to each side), then leakage.
    issues : tuple of str
        The issues checked (``outlier`` only with embeddings).
    settings : dict
        Every threshold used.
    """

    per_image: pd.DataFrame
    group_table: pd.DataFrame
    pairs: pd.DataFrame
    leakage: dict
    summary: dict
    findings: list
    issues: tuple
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe summary for the ``data_quality`` section of ``audit.json`` (no NaN or inf)."""
        return {
            "issues": list(self.issues),
            "summary": json_safe(self.summary),
            "leakage": json_safe(self.leakage),
            "findings": list(self.findings),
            "settings": json_safe(self.settings),
            "metrics": {f"issue_rate:{issue}": METRIC_INFO[f"issue_rate:{issue}"] for issue in self.issues},
        }


def _as_uint64(column: pd.Series, name: str) -> np.ndarray:
    values = column.to_numpy()
    if values.dtype == np.uint64:
        return values
    if values.dtype == np.int64:
        return values.view(np.uint64)
    if values.dtype.kind == "f":
        # A float64 holds 53 bits: the hashes were already damaged (e.g. by a missing value in the column).
        raise InputError(ERROR_HASH_FLOAT.format(column=name), column=name)
    try:
        return np.array([int(v) for v in values], dtype=np.uint64)
    except (TypeError, ValueError, OverflowError):
        for row, v in enumerate(values):
            try:
                np.uint64(int(v))
            except (TypeError, ValueError, OverflowError):
                raise InputError(ERROR_BAD_HASH.format(column=name, row=row), column=name, row=row) from None
        raise


def _check_setting(name, value, ok, what):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not ok(value):
        raise InputError(ERROR_SETTING.format(name=name, what=what, value=value))


def _number(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)


def _linear_low_score(values: np.ndarray, threshold: float) -> np.ndarray:
    """``min(1, v / (2 t))``: 0.5 at the threshold, lower below it, NaN where ``v`` is NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(values / (2.0 * threshold), 0.0, 1.0)


def _log_ratio_score(ratio: np.ndarray, factor: float) -> np.ndarray:
    """``0.5 ** (|log r| / log factor)``: 1 at r = 1, 0.5 at r = factor or 1 / factor."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.power(0.5, np.abs(np.log(ratio)) / math.log(factor))


def _defects(images: pd.DataFrame, settings: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{issue: (flags, scores)}`` for the defect issues built on the pixel attributes."""
    out = {}
    brightness = _number(images, "image_brightness")
    dark, light = settings["dark_threshold"], settings["light_threshold"]
    out["dark"] = (brightness < dark, _linear_low_score(brightness, dark))
    out["light"] = (brightness > light, _linear_low_score(1.0 - brightness, 1.0 - light))
    sharpness = _number(images, "image_sharpness")
    out["blurry"] = (sharpness < settings["blurry_threshold"],
                     _linear_low_score(sharpness, settings["blurry_threshold"]))
    contrast = _number(images, "image_contrast")
    out["low_information"] = (contrast < settings["low_information_threshold"],
                              _linear_low_score(contrast, settings["low_information_threshold"]))
    grayscale = np.array([bool(v) if not pd.isna(v) else False for v in images["image_is_grayscale"]],
                         dtype=bool)
    out["grayscale"] = (grayscale, np.where(grayscale, 0.0, 1.0))

    width, height = _number(images, "image_width"), _number(images, "image_height")
    side = np.sqrt(width * height)
    median_side = np.nanmedian(side) if np.isfinite(side).any() else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = side / median_side
    factor = settings["odd_size_factor"]
    size_score = _log_ratio_score(ratio, factor)
    out["odd_size"] = (size_score < 0.5, size_score)
    with np.errstate(invalid="ignore", divide="ignore"):
        aspect = np.maximum(width / height, height / width)
    aspect_score = _log_ratio_score(aspect, settings["odd_aspect_ratio_threshold"])
    out["odd_aspect_ratio"] = (aspect_score < 0.5, aspect_score)
    return out


#: Alignments of the whole/centre rule: (region of image i, region of image j).
_CENTRE_ALIGNMENTS = (("", ""), ("_centre", ""), ("", "_centre"))
#: Alignments of the corner rule: the whole of one image against a 90 % corner crop of the other.
_CORNER_ALIGNMENTS = tuple((f"_{c}", "") for c in CORNERS) + tuple(("", f"_{c}") for c in CORNERS)


def _rule(hashes: dict[str, np.ndarray], i: np.ndarray, j: np.ndarray, alignments, limits) -> tuple:
    """Which pairs pass the rule in at least one alignment, and their smallest phash distance in one.

    A pair passes an alignment ``(a, b)`` when, comparing region ``a`` of image ``i`` with region ``b`` of
    image ``j``, the phash, dhash and chash distances are all within ``limits`` (all three hashes must agree
    on the same alignment). Returns ``(passes, phash distance)``; the distance is the smallest over the
    passing alignments (over all alignments for pairs that pass none).
    """
    passes = np.zeros(i.size, dtype=bool)
    best = np.full(i.size, 64, dtype=np.int64)
    best_passing = np.full(i.size, 64, dtype=np.int64)
    gathered = {}  # each phash column is gathered once per side, though several alignments use it

    def phash(column, side, rows):
        if (column, side) not in gathered:
            gathered[column, side] = hashes[column][rows]
        return gathered[column, side]

    for a, b in alignments:
        p = popcount(phash(f"phash{a}", "i", i) ^ phash(f"phash{b}", "j", j)).astype(np.int64)
        ok = p <= limits[0]
        # dhash, then chash, only where the hashes before them agree (the same pairs pass)
        for name, limit in (("dhash", limits[1]), ("chash", limits[2])):
            rows = np.flatnonzero(ok)
            if 2 * rows.size > ok.size:  # most pairs still in: comparing all of them is cheaper
                ok &= popcount(hashes[f"{name}{a}"][i] ^ hashes[f"{name}{b}"][j]) <= limit
            elif rows.size:
                ok[rows] = popcount(hashes[f"{name}{a}"][i[rows]] ^ hashes[f"{name}{b}"][j[rows]]) <= limit
        passes |= ok
        best = np.minimum(best, p)
        best_passing = np.where(ok, np.minimum(best_passing, p), best_passing)
    return passes, np.where(passes, best_passing, best)


def _search_distance(stacked: np.ndarray, n_queries: int, wanted: int, settings: dict) -> int:
    """The largest search radius up to ``wanted`` whose bucket comparisons fit the budget."""
    radius, budget = wanted, settings["max_hash_comparisons"]
    pairs = all_pairs_comparisons(stacked.size, n_queries)
    if pairs <= DIRECT_SEARCH_MAX_PAIRS and pairs <= DIRECT_SEARCH_ADVANTAGE * budget:
        return wanted  # comparing every pair fits the budget at any radius (and is used when cheaper)

    def sorting(r):
        return sorting_work(stacked.size, max_distance=r, n_queries=n_queries)
    # Radii whose expected cost on uniform hashes is already over budget are skipped without counting
    # (counting one radius is a pass over every band, seconds at millions of hashes).
    while radius > 0 and expected_bucket_comparisons(stacked.size, max_distance=radius,
                                                     n_queries=n_queries) + sorting(radius) > budget:
        radius -= 1
    while radius > 0 and count_bucket_comparisons(stacked, max_distance=radius,
                                                  n_queries=n_queries) + sorting(radius) > budget:
        radius -= 1
    return radius


def _candidates(columns: list[np.ndarray], radius: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Distinct pairs (i < j) where the whole-image phash (``columns[0]``) of one image is within ``radius``
    of any phash in ``columns`` of the other, by one multi-index search over the stacked columns, and the
    number of pairs the crowding bound left out (:data:`audit.analysis.near_duplicates.MAX_LINKS_PER_HASH`)."""
    n = columns[0].size
    stacked = np.concatenate(columns)
    # Whole-image hashes are the queries: region-against-region pairs are never compared.
    if direct_search_is_cheaper(stacked, max_distance=radius, n_queries=n):
        # the pairs of find_near_duplicate_pairs_directly, left unsorted: they are sorted below anyway
        a, b, _, n_bounded = compare_all_pairs(np.asarray(stacked, dtype=np.uint64), max_distance=radius,
                                               n_queries=n, with_distance=False)
    else:
        found = find_near_duplicate_pairs(stacked, max_distance=radius, n_queries=n)
        a, b, n_bounded = found.i, found.j, found.n_bounded
    # Keep whole-against-region pairs of two different images (a < b, so a is the whole-image hash).
    keep = a < n
    a, b = a[keep], b[keep] % n
    keep = a != b
    a, b = a[keep], b[keep]
    key = unique_sorted(np.minimum(a, b) * np.int64(n) + np.maximum(a, b))
    i, j = np.divmod(key, n)
    return i, j, n_bounded


def _hash_links(hashes: dict[str, np.ndarray], settings: dict):
    """Hash-confirmed links (i < j), their phash distance, and the search radii used (module docstring)."""
    stacked = [hashes["phash"], hashes["phash_centre"]]
    n = hashes["phash"].size
    radius = _search_distance(np.concatenate(stacked), n, settings["phash_max_distance"], settings)
    i, j, n_bounded = _candidates(stacked, radius)
    limits = (radius, settings["dhash_max_distance"], settings["chash_max_distance"])
    ok, p = _rule(hashes, i, j, _CENTRE_ALIGNMENTS, limits)
    i, j, p = i[ok], j[ok], p[ok]
    corner_radius = None
    if "phash_nw" in hashes:
        stacked = [hashes["phash"]] + [hashes[f"phash_{c}"] for c in CORNERS]
        corner_radius = _search_distance(np.concatenate(stacked), n, settings["corner_phash_max_distance"],
                                         settings)
        ci, cj, corner_bounded = _candidates(stacked, corner_radius)
        n_bounded += corner_bounded
        limits = (corner_radius, settings["corner_dhash_max_distance"], settings["corner_chash_max_distance"])
        c_ok, cp = _rule(hashes, ci, cj, _CORNER_ALIGNMENTS, limits)
        i, j, p = np.concatenate([i, ci[c_ok]]), np.concatenate([j, cj[c_ok]]), np.concatenate([p, cp[c_ok]])
        # A pair linked by both rules keeps its smallest distance.
        if n * n * 65 < 2 ** 62:
            # one int64 key per (i, j, p), sorted: the order of lexsort((p, j, i)) at a fraction of its cost
            key = np.sort((i.astype(np.int64) * n + j) * 65 + p)
            i, j, p = key // 65 // n, key // 65 % n, key % 65
        else:
            order = np.lexsort((p, j, i))
            i, j, p = i[order], j[order], p[order]
        first = np.ones(i.size, dtype=bool)
        first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
        i, j, p = i[first], j[first], p[first]
    return i, j, p, radius, corner_radius, n_bounded


def _collapsed_hash_links(hashes: dict[str, np.ndarray], settings: dict):
    """:func:`_hash_links` on distinct hash tuples only, so the work stays linear in the worst case.

    Images whose every hash is identical (exact copies, and re-encodings the hashes cannot tell apart) are
    collapsed to their first row before any near-duplicate pairing: each other member gets one link to that
    row (distance 0), and links found between first rows stand for their whole groups (duplicate sets are
    connected components, so they are the same as with every pair linked). 4,000 identical images thus
    cost one search over one hash instead of 8 million pairs.
    """
    names = sorted(hashes)
    n = hashes[names[0]].size
    if n == 0:
        return _hash_links(hashes, settings)
    matrix = np.stack([np.asarray(hashes[name], dtype=np.uint64) for name in names], axis=1)
    _, first, inverse = np.unique(matrix, axis=0, return_index=True, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    if first.size == n:
        return _hash_links(hashes, settings)
    order = np.sort(first)  # distinct rows in their original order (stable positions for the search)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(order.size)
    i_u, j_u, p_u, radius, corner_radius, n_bounded = _hash_links({name: hashes[name][order] for name in names},
                                                                  settings)
    i_r, j_r = order[i_u], order[j_u]
    representative = first[inverse]  # first row holding the same hash tuple (np.unique: first occurrence)
    member = np.flatnonzero(representative != np.arange(n))
    i = np.concatenate([np.minimum(i_r, j_r), representative[member]]).astype(np.int64)
    j = np.concatenate([np.maximum(i_r, j_r), member]).astype(np.int64)
    p = np.concatenate([p_u, np.zeros(member.size, dtype=np.asarray(p_u).dtype)])
    # Pairs are distinct (members link only to their first row), so sorting one (i, j) key gives the order
    # of lexsort((j, i)).
    sort = np.argsort(i * np.int64(n) + j) if n * n < 2 ** 62 else np.lexsort((j, i))
    return i[sort], j[sort], p[sort], radius, corner_radius, n_bounded


def _exact_links(content_hash: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Links from each row to the first row with the same content hash, and the duplicated-hash flags."""
    values = content_hash.astype(object)
    present = values.notna() & (values.astype(str) != "")
    codes, _ = pd.factorize(values.where(present, None), use_na_sentinel=True)
    n = len(codes)
    positions = np.arange(n)
    valid = codes >= 0
    if not valid.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(n, dtype=bool)
    first = np.full(codes.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, codes[valid], positions[valid])
    counts = np.bincount(codes[valid], minlength=first.size)
    flags = np.zeros(n, dtype=bool)
    flags[valid] = counts[codes[valid]] > 1
    link = valid & (first[np.where(valid, codes, 0)] != positions)
    return first[codes[link]], positions[link], flags


def _format_percent(rate: float) -> str:
    percent = 100.0 * rate
    if percent == 0:
        return "0 %"
    if percent >= 10:
        return f"{percent:.0f} %"
    if percent >= 1:
        return f"{percent:.1f} %"
    return f"{percent:.2f} %"


def _rate_rows(flags: np.ndarray, codes: np.ndarray, names: list[str], *, issue: str, attribute: str,
               per_class: bool, settings: dict) -> list[dict]:
    """One row per group (codes index into names) with rate, interval, rest rate and adjusted p-value."""
    n_groups = len(names)
    n = np.bincount(codes, minlength=n_groups)
    x = np.bincount(codes, weights=flags.astype(np.float64), minlength=n_groups)
    total_n, total_x = int(flags.size), float(flags.sum())
    low, high = wilson_interval(x, n, confidence_level=settings["confidence_level"])
    rest_n, rest_x = total_n - n, total_x - x
    # One-sided Fisher exact test: is the group's rate *higher* than the rest's? (the pooled z test it
    # replaces rejected true nulls 7-22 % of the time at a nominal 5 % in groups of a few dozen images)
    p = fisher_p_value_higher(x, n, rest_x, rest_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(n > 0, x / np.where(n > 0, n, 1), np.nan)
        rest_rate = np.where(rest_n > 0, rest_x / np.where(rest_n > 0, rest_n, 1), np.nan)
    frame = pd.DataFrame({"n": n, "value": value, "ci_low": low, "ci_high": high})
    insufficient = flag_insufficient_evidence(frame, min_group_size=settings["min_group_size"],
                                              max_ci_width=settings["max_ci_width"],
                                              confidence_level=settings["confidence_level"]).to_numpy()
    tested = ~insufficient & np.isfinite(p)
    adjusted = np.full(n_groups, np.nan)
    if tested.any():
        adjusted[tested] = adjust_p_values(p[tested], method=settings["correction"])
    alpha = 1.0 - settings["confidence_level"]
    rows = []
    for k, name in enumerate(names):
        if n[k] == 0:
            continue
        if insufficient[k]:
            verdict = VERDICT_INSUFFICIENT
        elif np.isfinite(adjusted[k]) and adjusted[k] < alpha:
            verdict = VERDICT_WORSE
        else:
            verdict = VERDICT_NO_GAP
        rows.append({
            "attribute": "all" if per_class else attribute, "group": "all" if per_class else name,
            "class": name if per_class else "", "n": int(n[k]), "metric": f"issue_rate:{issue}",
            "value": float(value[k]), "ci_low": float(low[k]), "ci_high": float(high[k]),
            "insufficient_evidence": bool(insufficient[k]), "verdict": verdict,
            "p_value": float(p[k]), "rest_value": float(rest_rate[k]),
            "_rest_rate": float(rest_rate[k]), "_p_adjusted": float(adjusted[k]), "_issue": issue,
            "_smoothed_ratio": float(((x[k] + 0.5) / (n[k] + 1)) / ((rest_x[k] + 0.5) / (rest_n[k] + 1))),
        })
    return rows


def _finding(row: dict) -> str:
    word = ISSUE_WORDS[row["_issue"]]
    where = f"class {row['class']}" if row["class"] else f"{row['attribute']}={row['group']}"
    rate, rest = row["value"], row["_rest_rate"]
    if rest > 0:
        return (f"{word} images are {rate / rest:.1f}x as common in {where} ({_format_percent(rate)}) as in the "
                f"rest ({_format_percent(rest)}).")
    return f"{word} images occur in {where} ({_format_percent(rate)}) but not in the rest (0 %)."


def concentration_findings(group_table: pd.DataFrame, *, max_findings: int = 5) -> list[str]:
    """Sentences for the ``worse_than_rest`` issue-rate rows of a (final, audit-wide adjusted) table,
    strongest evidence (smallest adjusted p-value) first, each against the rest, with its adjusted p-value."""
    rows = group_table[group_table["metric"].astype(str).str.startswith("issue_rate:")
                       & (group_table["verdict"] == VERDICT_WORSE)]
    rows = rows.sort_values(["p_adjusted", "value"], ascending=[True, False], kind="mergesort")
    texts = []
    for row in rows.to_dict("records"):
        issue = row["metric"].split(":", 1)[1]
        if issue not in ISSUE_WORDS or len(texts) >= max_findings:
            continue
        text = _finding(dict(row, _issue=issue, _rest_rate=row["rest_value"]))
        if np.isfinite(row["p_adjusted"]):
            text = text[:-1] + f" (adjusted p = {row['p_adjusted']:.2g})."
        texts.append(text)
    return texts


def find_data_quality_issues(
    images: pd.DataFrame,
    *,
    embeddings: np.ndarray | None = None,
    group_labels: dict[str, pd.Series] | None = None,
    classes=None,
    confidence_level: float = 0.95,
    min_group_size: int = 30,
    max_ci_width: float = 0.3,
    correction: str = "holm",
    dark_threshold: float = DEFAULT_DARK_THRESHOLD,
    light_threshold: float = DEFAULT_LIGHT_THRESHOLD,
    blurry_threshold: float = DEFAULT_BLURRY_THRESHOLD,
    low_information_threshold: float = DEFAULT_LOW_INFORMATION_THRESHOLD,
    odd_size_factor: float = DEFAULT_ODD_SIZE_FACTOR,
    odd_aspect_ratio_threshold: float = DEFAULT_ODD_ASPECT_RATIO_THRESHOLD,
    phash_max_distance: int = DEFAULT_PHASH_MAX_DISTANCE,
    dhash_max_distance: int = DEFAULT_DHASH_MAX_DISTANCE,
    chash_max_distance: int = DEFAULT_CHASH_MAX_DISTANCE,
    corner_phash_max_distance: int = DEFAULT_CORNER_PHASH_MAX_DISTANCE,
    corner_dhash_max_distance: int = DEFAULT_CORNER_DHASH_MAX_DISTANCE,
    corner_chash_max_distance: int = DEFAULT_CORNER_CHASH_MAX_DISTANCE,
    embedding_similarity_threshold: float = DEFAULT_EMBEDDING_SIMILARITY_THRESHOLD,
    embedding_k: int = DEFAULT_EMBEDDING_K,
    outlier_percentile: float = DEFAULT_OUTLIER_PERCENTILE,
    max_hash_comparisons: int = DEFAULT_MAX_HASH_COMPARISONS,
    max_findings: int = 5,
) -> DataQualityResult:
    """Find duplicates, leakage, outliers and image defects, and where they concentrate.

    Parameters
    ----------
    images : DataFrame
        One row per image: ``id``, ``label``, ``content_hash``, optional ``split``, the pixel attributes
        ``image_width``, ``image_height``, ``image_brightness``, ``image_contrast``, ``image_sharpness``,
        ``image_is_grayscale`` and the hash columns of :func:`audit.analysis.hashing.compute_perceptual_hashes`
        (``phash``, ``dhash``, ``chash``, their ``_centre`` versions and, optionally, the corner-crop
        ``_nw``, ``_ne``, ``_sw``, ``_se`` versions; unsigned 64-bit).
    embeddings : ndarray, shape (n, d), optional
        One embedding per row; adds embedding near-duplicate links and the ``outlier`` issue.
    group_labels : dict of str to Series, optional
        Attribute (or intersection ``"a & b"``) -> group label of every row, in row order (as given by
        :func:`audit.analysis._groups.iter_group_keys`).
    classes : sequence of str, optional
        Class order of the per-class rows (default: sorted labels).
    confidence_level, min_group_size, max_ci_width, correction
        Interval level, evidence rules and multiple-comparison method (``"holm"`` or ``"bh"``); see the
        module docstring.
    dark_threshold, light_threshold, blurry_threshold, low_information_threshold, odd_size_factor, \
odd_aspect_ratio_threshold, phash_max_distance, dhash_max_distance, chash_max_distance, \
corner_phash_max_distance, corner_dhash_max_distance, corner_chash_max_distance, \
embedding_similarity_threshold, embedding_k, outlier_percentile
        Detector settings; module docstring.
    max_findings : int
        Most concentration sentences in ``findings``.

    Returns
    -------
    DataQualityResult
    """
    group_labels = dict(group_labels or {})
    settings = {
        "confidence_level": confidence_level, "min_group_size": min_group_size, "max_ci_width": max_ci_width,
        "correction": correction, "dark_threshold": dark_threshold, "light_threshold": light_threshold,
        "blurry_threshold": blurry_threshold, "low_information_threshold": low_information_threshold,
        "odd_size_factor": odd_size_factor, "odd_aspect_ratio_threshold": odd_aspect_ratio_threshold,
        "phash_max_distance": phash_max_distance, "dhash_max_distance": dhash_max_distance,
        "chash_max_distance": chash_max_distance,
        "corner_phash_max_distance": corner_phash_max_distance,
        "corner_dhash_max_distance": corner_dhash_max_distance,
        "corner_chash_max_distance": corner_chash_max_distance,
        "embedding_similarity_threshold": embedding_similarity_threshold, "embedding_k": embedding_k,
        "outlier_percentile": outlier_percentile, "max_hash_comparisons": max_hash_comparisons,
    }
    _validate_settings(settings, max_findings)
    n = len(images)
    if n == 0:
        raise InputError(ERROR_EMPTY)
    required = ("id", "label", "content_hash") + PROPERTY_COLUMNS + REQUIRED_HASH_COLUMNS
    missing = [column for column in required if column not in images.columns]
    if missing:
        raise InputError(ERROR_MISSING_COLUMNS.format(columns=", ".join(missing)), column=missing[0])
    images = images.reset_index(drop=True)
    ids = images["id"].astype(str)
    duplicated = ids.duplicated()
    if duplicated.any():
        raise InputError(ERROR_DUPLICATE_IDS.format(value=ids[duplicated].iloc[0]), column="id")
    labels = images["label"].astype(str)
    classes = list(classes) if classes is not None else sorted(labels.unique())
    class_index = {name: k for k, name in enumerate(classes)}
    unknown = ~labels.isin(class_index)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(ERROR_UNKNOWN_LABEL.format(row=row, id=ids[row], label=labels[row]), column="label",
                         row=row)
    for name, series in group_labels.items():
        if len(series) != n:
            raise InputError(ERROR_GROUP_LENGTH.format(name=name, rows=len(series), n=n))
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != n:
            raise InputError(ERROR_EMBEDDINGS_ROWS.format(rows=embeddings.shape[0] if embeddings.ndim else 0, n=n))
    issues = tuple(issue for issue in ISSUES if issue != "outlier" or embeddings is not None)

    flags: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}

    # Duplicates ----------------------------------------------------------------------------------------
    exact_i, exact_j, exact_flags = _exact_links(images["content_hash"])
    flags["exact_duplicate"] = exact_flags
    scores["exact_duplicate"] = np.where(exact_flags, 0.0, 1.0)
    use_corners = all(name in images.columns for name in CORNER_HASH_COLUMNS)
    hashes = {name: _as_uint64(images[name], name)
              for name in REQUIRED_HASH_COLUMNS + (CORNER_HASH_COLUMNS if use_corners else ())}
    hash_i, hash_j, hash_d, search_distance, corner_distance, n_bounded = _collapsed_hash_links(hashes, settings)
    links = [(LINK_EXACT, exact_i, exact_j, 0, np.nan), (LINK_HASH, hash_i, hash_j, hash_d, np.nan)]
    neighbours = None
    if embeddings is not None:
        neighbours = find_embedding_neighbours(embeddings, k=embedding_k, threshold=embedding_similarity_threshold)
        links.append((LINK_EMBEDDING, neighbours.i, neighbours.j, -1, neighbours.similarity))
    pairs = _merge_links(links)
    component = connected_components(n, pairs["i"].to_numpy(), pairs["j"].to_numpy())
    member = component >= 0
    flags["near_duplicate"] = member
    near_score = np.ones(n)
    hd = pairs["hash_distance"].to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        link_hash_score = hd / (2.0 * (phash_max_distance + 1))
    link_emb_score = (1.0 - pairs["similarity"].to_numpy(dtype=np.float64)) / (
        2.0 * max(1.0 - embedding_similarity_threshold, 1e-12))
    link_score = np.clip(np.fmin(link_hash_score, link_emb_score), 0.0, 0.5)
    link_score = np.where(np.isnan(link_score), 0.5, link_score)
    if len(pairs):
        np.minimum.at(near_score, pairs["i"].to_numpy(), link_score)
        np.minimum.at(near_score, pairs["j"].to_numpy(), link_score)
    # A flagged image's score stays below 0.5 even at the threshold itself.
    scores["near_duplicate"] = np.where(member, np.minimum(near_score, np.nextafter(0.5, 0)), near_score)

    # Outliers --------------------------------------------------------------------------------------------
    outlier_threshold = None
    if neighbours is not None:
        distance = neighbours.mean_distance
        outlier_threshold = float(np.percentile(distance, outlier_percentile))
        if outlier_threshold > 0:
            scores["outlier"] = np.power(0.5, distance / outlier_threshold)
            flags["outlier"] = distance > outlier_threshold
        else:
            scores["outlier"] = np.ones(n)
            flags["outlier"] = np.zeros(n, dtype=bool)

    # Defects ---------------------------------------------------------------------------------------------
    for issue, (flag, score) in _defects(images, settings).items():
        flags[issue] = np.asarray(flag, dtype=bool)
        scores[issue] = np.asarray(score, dtype=np.float64)

    per_image = pd.DataFrame({"id": ids})
    for issue in issues:
        per_image[f"is_{issue}_issue"] = flags[issue]
        per_image[f"{issue}_score"] = scores[issue]
    per_image["duplicate_set"] = pd.Series(_set_ids(component), dtype=object)

    # Leakage ---------------------------------------------------------------------------------------------
    leakage = _leakage(images, pairs)

    # Rates by class and group ---------------------------------------------------------------------------
    rows = []
    label_codes = labels.map(class_index).to_numpy(dtype=np.int64)
    # Each attribute's groups are coded once, not once per issue (a pass over every label in Python).
    group_codes = {}
    for attribute, series in group_labels.items():
        values = normalise_group_labels(pd.Series(series).reset_index(drop=True))
        names = sorted(values.unique())
        group_codes[attribute] = (values.map({name: k for k, name in enumerate(names)}).to_numpy(dtype=np.int64),
                                  names)
    for issue in issues:
        flag = flags[issue]
        overall = _rate_rows(flag, np.zeros(n, dtype=np.int64), ["all"], issue=issue, attribute="all",
                             per_class=False, settings=settings)
        for row in overall:  # no test against a rest; still insufficient_data exactly when insufficient
            row["verdict"] = VERDICT_INSUFFICIENT if row["insufficient_evidence"] else VERDICT_NONE
            row["p_value"] = row["rest_value"] = float("nan")
        rows.extend(overall)
        rows.extend(_rate_rows(flag, label_codes, classes, issue=issue, attribute="all", per_class=True,
                               settings=settings))
        for attribute, (codes, names) in group_codes.items():
            rows.extend(_rate_rows(flag, codes, names, issue=issue, attribute=attribute, per_class=False,
                                   settings=settings))
    group_table = coerce_group_metrics(pd.DataFrame(rows)) if rows else empty_group_metrics()

    # Findings --------------------------------------------------------------------------------------------
    worse = [row for row in rows if row["verdict"] == VERDICT_WORSE]
    # Rank by the rate ratio with half a count added on each side, so that "3 of 40 against none of the rest"
    # does not outrank a large, well-supported gap through an infinite ratio.
    worse.sort(key=lambda r: (-r["_smoothed_ratio"], r["_p_adjusted"]))
    findings = [_finding(row) for row in worse[:max_findings]]
    n_concentration = len(findings)
    if leakage["n_pairs"]:
        parts = ", ".join(f"{e['split_a']}/{e['split_b']}: {e['n_pairs']}" for e in leakage["by_split_pair"])
        findings.append(f"{leakage['n_pairs']} near-duplicate pairs cross splits ({parts}): the same images "
                        "are in more than one split.")

    summary = {
        "n_images": n,
        "issues": {issue: int(flags[issue].sum()) for issue in issues},
        "n_duplicate_sets": int(component.max() + 1) if member.any() else 0,
        "n_images_in_duplicate_sets": int(member.sum()),
        "n_exact_duplicate_groups": int(pd.Series(images["content_hash"])[exact_flags].nunique()),
        # the first findings are group/class concentrations (re-derived audit-wide by the pipeline)
        "n_concentration_findings": n_concentration,
    }
    settings = {**settings, "phash_search_distance": search_distance,
                "corner_phash_search_distance": corner_distance, "max_links_per_hash": MAX_LINKS_PER_HASH}
    summary["n_hash_pairs_bounded"] = int(n_bounded)
    if neighbours is not None:
        settings["embedding_search"] = "exact" if neighbours.exact else "approximate_hnsw"
    if outlier_threshold is not None:
        settings = {**settings, "outlier_distance_threshold": outlier_threshold}
    if search_distance < phash_max_distance:
        findings.append(ERROR_SEARCH_NARROWED.format(used=search_distance, wanted=phash_max_distance))
    elif corner_distance is not None and corner_distance < corner_phash_max_distance:
        findings.append(ERROR_SEARCH_NARROWED.format(used=corner_distance, wanted=corner_phash_max_distance))
    if n_bounded:
        findings.append(FINDING_LINKS_BOUNDED.format(n_pairs=int(n_bounded), cap=MAX_LINKS_PER_HASH))
    if neighbours is not None and not neighbours.exact:
        findings.append(FINDING_EMBEDDING_APPROXIMATE.format(n=n))
    return DataQualityResult(per_image=per_image, group_table=group_table, pairs=_with_ids(pairs, ids),
                             leakage=leakage, summary=summary, findings=findings, issues=issues,
                             settings=settings)


def _set_ids(component: np.ndarray) -> np.ndarray:
    """Set ids as zero-padded strings ("007"), so they sort in set order; None for images in no set.

    Strings (not a nullable integer column) survive every table round trip unchanged: a nullable integer
    turns into floats with NaN in numpy and into "<NA>" when stringified.
    """
    ids = np.full(component.size, None, dtype=object)
    member = component >= 0
    if member.any():
        width = len(str(int(component.max())))
        ids[member] = [f"{int(c):0{width}d}" for c in component[member]]
    return ids


def _validate_settings(settings: dict, max_findings) -> None:
    positive = lambda v: v > 0  # noqa: E731
    _check_setting("confidence_level", settings["confidence_level"], lambda v: 0 < v < 1, "between 0 and 1")
    _check_setting("min_group_size", settings["min_group_size"], lambda v: v >= 0, "a non-negative number")
    _check_setting("max_ci_width", settings["max_ci_width"], positive, "a positive number")
    if settings["correction"] not in ("holm", "bh"):
        raise InputError(ERROR_SETTING.format(name="correction", what="'holm' or 'bh'",
                                              value=settings["correction"]))
    _check_setting("dark_threshold", settings["dark_threshold"], lambda v: 0 < v < 1, "between 0 and 1")
    _check_setting("light_threshold", settings["light_threshold"], lambda v: 0 < v < 1, "between 0 and 1")
    _check_setting("blurry_threshold", settings["blurry_threshold"], positive, "a positive number")
    _check_setting("low_information_threshold", settings["low_information_threshold"], positive,
                   "a positive number")
    _check_setting("odd_size_factor", settings["odd_size_factor"], lambda v: v > 1, "a number above 1")
    _check_setting("odd_aspect_ratio_threshold", settings["odd_aspect_ratio_threshold"], lambda v: v > 1,
                   "a number above 1")
    for name in ("phash_max_distance", "dhash_max_distance", "chash_max_distance", "corner_phash_max_distance",
                 "corner_dhash_max_distance", "corner_chash_max_distance"):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 63:
            raise InputError(ERROR_SETTING.format(name=name, what="an integer from 0 to 63", value=value))
    _check_setting("embedding_similarity_threshold", settings["embedding_similarity_threshold"],
                   lambda v: -1 < v < 1, "a cosine similarity between -1 and 1 (exclusive)")
    value = settings["embedding_k"]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(ERROR_SETTING.format(name="embedding_k", what="a positive integer", value=value))
    _check_setting("outlier_percentile", settings["outlier_percentile"], lambda v: 0 < v < 100,
                   "a percentile between 0 and 100 (exclusive)")
    value = settings["max_hash_comparisons"]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(ERROR_SETTING.format(name="max_hash_comparisons", what="a non-negative integer",
                                              value=value))
    if isinstance(max_findings, bool) or not isinstance(max_findings, (int, np.integer)) or max_findings < 0:
        raise InputError(ERROR_SETTING.format(name="max_findings", what="a non-negative integer",
                                              value=max_findings))


_LINK_KINDS = (LINK_EXACT, LINK_HASH, LINK_EMBEDDING)  # strongest evidence first
#: The dtype pandas gives a column of Python strings (``str`` on pandas >= 3, ``object`` before).
_STRING_DTYPE = pd.Series(np.array([""], dtype=object)).dtype


def _merge_links(links: list[tuple]) -> pd.DataFrame:
    """One row per linked pair, keeping the strongest evidence (exact > hash > embedding).

    ``links`` holds one ``(kind, i, j, hash_distance, similarity)`` per kind of evidence, the last two
    arrays or scalars. The pair's row is the first one of its strongest kind; its similarity is the
    largest over all its rows (NaN when none has one). Sorted by ``(i, j)``. Done on numpy arrays (pairs
    can number millions): the same rows, values and dtypes (``kind`` the default string dtype) as sorting,
    grouping and de-duplicating one concatenated frame with pandas.
    """
    links = [(kind, np.asarray(i), np.asarray(j), distance, similarity)
             for kind, i, j, distance, similarity in links if len(i)]
    if not links:
        frame = pd.DataFrame({"i": [], "j": [], "kind": [], "hash_distance": [], "similarity": []})
        frame["i"] = frame["i"].astype(np.int64)
        frame["j"] = frame["j"].astype(np.int64)
        frame["hash_distance"] = pd.array([], dtype="Int64")
        frame["similarity"] = frame["similarity"].astype(np.float64)
        return frame.reset_index(drop=True)
    i = np.concatenate([i for _, i, _, _, _ in links]).astype(np.int64)
    j = np.concatenate([j for _, _, j, _, _ in links]).astype(np.int64)
    distance = np.concatenate([np.broadcast_to(np.asarray(d, dtype=np.int64), i_.shape)
                               for _, i_, _, d, _ in links])
    similarity = np.concatenate([np.broadcast_to(np.asarray(s, dtype=np.float64), i_.shape)
                                 for _, i_, _, _, s in links])
    rank = np.concatenate([np.full(i_.size, _LINK_KINDS.index(kind), dtype=np.int8) for kind, i_, _, _, _ in links])
    n = int(max(i.max(), j.max())) + 1
    if n * n * 3 < 2 ** 62:
        # one (i, j, kind) key, stably sorted: the order of lexsort((rank, j, i)) at a fraction of its cost
        order = np.argsort((i * n + j) * 3 + rank, kind="stable")
    else:
        order = np.lexsort((rank, j, i))  # stable: equal kinds keep the order of ``links``
    i, j, rank, distance, similarity = i[order], j[order], rank[order], distance[order], similarity[order]
    first = np.ones(i.size, dtype=bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    starts = np.flatnonzero(first)
    # fmax ignores NaN unless both are NaN: the groupby max of the similarities
    similarity = np.fmax.reduceat(similarity, starts)
    i, j, rank, distance = i[starts], j[starts], rank[starts], distance[starts]
    # Embedding-only links have no hash distance (the hashes were not within the search radius).
    hash_distance = pd.array(distance, dtype="Int64")
    hash_distance[distance < 0] = pd.NA
    kind = pd.Series(pd.Categorical.from_codes(rank, categories=_LINK_KINDS)).astype(_STRING_DTYPE)
    return pd.DataFrame({"i": i, "j": j, "kind": kind, "hash_distance": hash_distance, "similarity": similarity})


def _with_ids(pairs: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    pairs = pairs.copy()
    if len(pairs) and ids.dtype == _STRING_DTYPE:
        # Taken from the string array itself: the same column as from an object array of the ids, without
        # turning millions of ids into Python strings and back.
        pairs.insert(2, "id_a", ids.array.take(pairs["i"].to_numpy()))
        pairs.insert(3, "id_b", ids.array.take(pairs["j"].to_numpy()))
        return pairs
    pairs.insert(2, "id_a", ids.to_numpy()[pairs["i"].to_numpy()] if len(pairs) else [])
    pairs.insert(3, "id_b", ids.to_numpy()[pairs["j"].to_numpy()] if len(pairs) else [])
    return pairs


def _leakage(images: pd.DataFrame, pairs: pd.DataFrame) -> dict:
    if "split" not in images.columns or pairs.empty:
        return {"n_pairs": 0, "by_split_pair": [], "pairs": []}
    split = images["split"].astype(object).where(images["split"].notna(), None).to_numpy()
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    split_i, split_j = split[i], split[j]
    crossing = np.array([a is not None and b is not None and a != b for a, b in zip(split_i, split_j)], dtype=bool)
    if not crossing.any():
        return {"n_pairs": 0, "by_split_pair": [], "pairs": []}
    ids = images["id"].astype(str).to_numpy()
    listed, counts = [], {}
    for k in np.flatnonzero(crossing):
        a, b = str(split_i[k]), str(split_j[k])
        key = tuple(sorted((a, b)))
        counts[key] = counts.get(key, 0) + 1
        distance = pairs["hash_distance"].iloc[k]
        listed.append({"id_a": ids[i[k]], "split_a": a, "id_b": ids[j[k]], "split_b": b,
                       "kind": pairs["kind"].iloc[k],
                       "hash_distance": None if pd.isna(distance) else int(distance),
                       "similarity": None if pd.isna(pairs["similarity"].iloc[k])
                       else float(pairs["similarity"].iloc[k])})
    by_pair = [{"split_a": a, "split_b": b, "n_pairs": c} for (a, b), c in sorted(counts.items())]
    return {"n_pairs": int(crossing.sum()), "by_split_pair": by_pair, "pairs": listed}
