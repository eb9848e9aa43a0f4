"""Near-duplicate search that scales: hash buckets for 64-bit hashes, a nearest-neighbour index for embeddings.

Nothing here builds an all-pairs matrix. Memory is a small constant per image (the hashes themselves, a
sort order and one band key per band pass) plus the pairs found.

Multi-index hashing (:func:`find_near_duplicate_pairs`)
    The 64 bits are split into ``m`` contiguous bands. If two hashes differ in at most ``max_distance``
    bits, at least one band differs in at most ``s = max_distance // m`` bits (pigeonhole: otherwise the
    total would be at least ``m * (s + 1) > max_distance``). So bucketing the hashes by each band's value
    (``s = 0``), or, for ``s > 0``, by the band's value with ``s`` of its bit positions masked out (one pass
    per choice of positions), and comparing only hashes that share a bucket finds *every* pair within
    ``max_distance``: recall 1 by construction. With ``m = max_distance + 1`` this is plain bucketing on
    ``max_distance + 1`` bands. The plan ``(m, s)`` is chosen per call to minimise the expected work for
    ``n`` uniformly spread hashes: ``n**2 / 2**(width - s + 1)`` comparisons and one sort of ``n`` keys per
    pass (:func:`_plan`); long bands with a small radius win at millions of hashes, many short bands on
    small data sets. Buckets are found by sorting (no hash table); the pairs of a bucket are compared
    offset by offset in chunks, never as a matrix; a pair met in several buckets is reported once.
    :func:`count_bucket_comparisons` gives the exact cost beforehand, :func:`expected_bucket_comparisons`
    the expected cost for uniform hashes without looking at them. With ``n_queries``, only pairs involving
    one of the first ``n_queries`` hashes are compared (the queries come first in each bucket and only they
    start a comparison): whole-image hashes against whole-image and crop hashes, never crop against crop. Measured (bench/data_quality.py,
    1,000,000 uniform hashes, 2 shared cores): about 3-7 s at ``max_distance`` 4, 3-10 s at 5, 23-51 s at
    6; the cost grows steeply beyond that, and a radius near 16 is only practical up to some tens of
    thousands of images.
Direct search (:func:`find_near_duplicate_pairs_directly`)
    The same pairs by comparing every pair, in blocks of 64 x 4,096 (xor + popcount; no matrix of all pairs is
    held). Quadratic, but each comparison costs about 1/25 of a bucket comparison, and real hashes crowd the
    buckets: on the 10,000 CIFAR-10 test images the radius-16 search makes 128 million bucket comparisons for
    200 million pairs, 2.8 s against 0.2 s directly. :func:`direct_search_is_cheaper` decides from the exact
    bucket count (data_quality uses the cheaper one).
Embedding neighbours (:func:`find_embedding_neighbours`)
    Cosine similarity of L2-normalised embeddings; exact k-nearest-neighbour search with faiss
    (``IndexFlatIP``) when ``faiss`` is importable, else scikit-learn's ``NearestNeighbors``, in chunks of
    queries. Exact search is quadratic: above :data:`EMBEDDING_EXACT_MAX_PAIRS` pairs faiss's HNSW graph
    gives approximate neighbours in ``n log n`` (recall about 0.99; ``EmbeddingNeighbours.exact`` says which).
Connected components (:func:`connected_components`)
    Union-find over the links (scipy's sparse graph routine), giving each set of linked images one id.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

ERROR_HASHES_NOT_1D = ("near-duplicate search expects a 1-D array of 64-bit hashes (uint64), got shape {shape}: "
                       "pass one hash per image")
ERROR_MAX_DISTANCE = "max_distance must be an integer from 0 to 63, got {value!r}"
ERROR_EMBEDDINGS_SHAPE = ("embeddings must be a 2-D float array (images x dimensions) without NaN or inf, got "
                          "shape {shape}: pass one embedding row per image")
ERROR_K = "k must be a positive integer, got {value!r}"
ERROR_N_QUERIES = "n_queries must be None or an integer from 0 to the number of hashes ({n}), got {value!r}"
ERROR_THRESHOLD = "threshold must be a cosine similarity between -1 and 1, got {value!r}"

_BYTE_COUNTS = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def unique_sorted(values: np.ndarray, *, return_index: bool = False):
    """``numpy.unique`` of a 1-D array by sorting (and the first position of each value with ``return_index``).

    numpy 2.x's ``unique`` goes through a hash table for integers, which is an order of magnitude slower than a
    sort on tens of millions of pair keys (measured: 41 s against 0.6 s for 30 million int64).
    """
    values = np.asarray(values)
    if return_index:
        order = np.argsort(values, kind="stable")  # stable: the first occurrence of a value comes first
        ordered = values[order]
    else:
        ordered = np.sort(values)
    first = np.ones(ordered.size, dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return (ordered[first], order[first]) if return_index else ordered[first]


def popcount(values) -> np.ndarray:
    """Number of set bits of each uint64 (``numpy.bitwise_count`` on numpy >= 2, a byte table before)."""
    values = np.asarray(values, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = values.reshape(values.shape + (1,)).view(np.uint8)
    return _BYTE_COUNTS[as_bytes].sum(axis=-1, dtype=np.uint8)


#: Crowding bound: a hash keeps at most this many links to later hashes (the smallest positions found). A
#: cluster of ``c`` mutual near-duplicates would otherwise give ``c * c / 2`` pairs (8 million at 4,000, held in
#: memory and verified); bounded, it gives at most ``MAX_LINKS_PER_HASH * c`` and is still one connected set
#: (each member keeps links to the next ones), so its duplicate set is unchanged. What it can miss: the link
#: between two images of such a cluster that are not connected through others, and an image's closest link
#: (its score can then come from a farther one). Dropped pairs are counted (``HashPairs.n_bounded``). The
#: comparisons themselves are bounded by the caller's budget, which counts them exactly
#: (:func:`count_bucket_comparisons`), crowded buckets included.
MAX_LINKS_PER_HASH = 256

#: Found pair records kept before repeats are dropped (bounds memory when pairs share many buckets).
_COMPACT_AT = 1_000_000

#: Candidate pairs compared per step; bounds the working memory of the bucket scan (~50 bytes a pair).
_PAIR_CHUNK = 1_000_000


@dataclass(frozen=True)
class HashPairs:
    """Pairs of hashes within a Hamming distance.

    Attributes
    ----------
    i, j : ndarray of int64
        Row positions of the two hashes, ``i < j``, sorted by ``(i, j)``; each pair once.
    distance : ndarray of int64
        Hamming distance (number of differing bits, 0..64) of each pair.
    n_candidates : int
        Number of same-bucket comparisons made (a measure of the work done).
    n_bounded : int
        Pairs within the radius dropped by the crowding bound (:data:`MAX_LINKS_PER_HASH`). Exact for the
        direct search; for the bucket search a pair found again in a later pass is counted again, so it is an
        upper bound. 0 unless some hash has more than ``MAX_LINKS_PER_HASH`` later hashes within the radius.
    """

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray
    n_candidates: int
    n_bounded: int = 0

    def __len__(self) -> int:
        return int(self.i.size)


@dataclass(frozen=True)
class EmbeddingNeighbours:
    """Nearest neighbours of every embedding by cosine similarity.

    Attributes
    ----------
    i, j : ndarray of int64
        Pairs with cosine similarity at least ``threshold`` among each row's ``k`` nearest neighbours,
        ``i < j``, each pair once.
    similarity : ndarray of float64
        Cosine similarity of each pair (1 = same direction).
    mean_distance : ndarray of float64, shape (n,)
        Mean cosine distance (1 - similarity) of each row to its ``k`` nearest other rows (fewer when the
        data set has fewer rows); the outlier score is built on it.

    exact : bool
        True when the neighbours come from an exact search, False when from the approximate graph search
        (:data:`EMBEDDING_EXACT_MAX_PAIRS`).
    """

    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray
    mean_distance: np.ndarray
    exact: bool = True


def _band_layout(n_bands: int) -> list[tuple[int, int]]:
    """(shift, width) of each of ``n_bands`` contiguous bands covering the 64 bits as evenly as possible."""
    widths = [64 // n_bands + (1 if b < 64 % n_bands else 0) for b in range(n_bands)]
    shifts = np.concatenate(([0], np.cumsum(widths)[:-1])).tolist()
    return list(zip(shifts, widths))


#: Cost of one bucketing pass per hash (argsort + scan set-up), in units of one pair comparison.
_PASS_COST_PER_HASH = 3.0
#: Fixed cost of one pass (Python overhead), in the same units.
_PASS_COST_FIXED = 20_000.0


def _plan(n: int, max_distance: int, pair_share: float = 1.0) -> tuple[int, int]:
    """(number of bands, in-band radius) with the least expected work for ``n`` uniformly spread hashes.

    ``pair_share`` is the share of the ``n * n / 2`` pairs that are compared at all (below 1 when only
    pairs involving a query are wanted: :func:`_pair_share`).

    Any ``m`` bands with in-band radius ``s = max_distance // m`` find every pair, because
    ``m * (s + 1) > max_distance`` (pigeonhole). Radius 0 is plain bucketing; radius ``s`` runs one pass per
    choice of ``s`` bit positions of the band, with those bits masked out of the key.
    """
    best = None
    for n_bands in range(1, min(max_distance, 63) + 2):
        radius = max_distance // n_bands
        passes = candidates = 0.0
        for _, width in _band_layout(n_bands):
            if radius >= width:
                candidates = math.inf
                break
            combos = math.comb(width, radius)
            passes += combos
            candidates += combos * pair_share * n * n / 2.0 / 2.0 ** (width - radius)
        cost = candidates + passes * (n * _PASS_COST_PER_HASH + _PASS_COST_FIXED)
        if best is None or cost < best[0]:
            best = (cost, n_bands, radius)
    return best[1], best[2]


def expected_bucket_comparisons(n: int, *, max_distance: int, n_queries: int | None = None) -> float:
    """Expected same-bucket comparisons of :func:`find_near_duplicate_pairs` for ``n`` uniformly random hashes.

    Computed from the plan alone (no hashes needed): ``comb(width, s) * n**2 / 2 / 2**(width - s)`` summed
    over the bands. Real hashes cluster, so their exact count (:func:`count_bucket_comparisons`) is
    normally higher: a radius whose expected count is already over a budget can be skipped uncounted.
    ``n_queries`` as in :func:`find_near_duplicate_pairs`.
    """
    max_distance = _validate_max_distance(max_distance)
    share = _pair_share(int(n), _validate_n_queries(n_queries, int(n)))
    n_bands, radius = _plan(int(n), max_distance, share)
    return float(sum(math.comb(width, radius) * share * float(n) * float(n) / 2.0 / 2.0 ** (width - radius)
                     for _, width in _band_layout(n_bands)))


def sorting_work(n: int, *, max_distance: int, n_queries: int | None = None) -> float:
    """Work of the bucketing passes of :func:`find_near_duplicate_pairs` on ``n`` hashes, in comparisons.

    One pass sorts every hash by its band key: about ``_PASS_COST_PER_HASH`` (3) comparisons' worth of time
    per hash, plus a fixed cost. At millions of hashes and a plan with many passes (a band searched within
    radius 2 or more) this, not the comparisons, dominates; add it to the comparisons to budget a search.
    """
    max_distance = _validate_max_distance(max_distance)
    share = _pair_share(int(n), _validate_n_queries(n_queries, int(n)))
    n_bands, radius = _plan(int(n), max_distance, share)
    passes = sum(math.comb(width, radius) for _, width in _band_layout(n_bands))
    return float(passes * (n * _PASS_COST_PER_HASH + _PASS_COST_FIXED))


def _pair_share(n: int, n_queries: int | None) -> float:
    """Share of all pairs of ``n`` hashes that involve at least one of the first ``n_queries``."""
    if n_queries is None or n < 2:
        return 1.0
    q, r = float(n_queries), float(n - n_queries)
    return (q * (q - 1) / 2.0 + q * r) / (n * (n - 1) / 2.0)


#: Band keys below this many values are counted in a dense table (a gather, no sort); wider ones by sorting.
_DENSE_KEYS = 1 << 26


def _in_query_buckets(keys: np.ndarray, n_queries: int, mask: int) -> np.ndarray:
    """Positions (from 0 at ``keys[n_queries]``) of the non-query keys equal to some query key."""
    others = keys[n_queries:]
    if mask < _DENSE_KEYS:
        present = np.zeros(mask + 1, dtype=bool)
        present[keys[:n_queries].astype(np.int64)] = True
        return np.flatnonzero(present[others.astype(np.int64)])
    unique = np.unique(keys[:n_queries])
    if unique.size == 0:
        return np.zeros(0, dtype=np.int64)
    index = np.minimum(np.searchsorted(unique, others), unique.size - 1)
    return np.flatnonzero(unique[index] == others)


def _validate_n_queries(n_queries, n: int):
    if n_queries is None:
        return None
    if isinstance(n_queries, bool) or not isinstance(n_queries, (int, np.integer)) or not 0 <= n_queries <= n:
        raise ValueError(ERROR_N_QUERIES.format(n=n, value=n_queries))
    return int(n_queries)


def _passes(n: int, max_distance: int, pair_share: float = 1.0):
    """Yield ``(shift, key_mask, width)`` of every bucketing pass of the plan for ``n`` hashes."""
    n_bands, radius = _plan(n, max_distance, pair_share)
    for shift, width in _band_layout(n_bands):
        full = (1 << width) - 1
        for positions in combinations(range(width), radius):
            mask = full
            for position in positions:
                mask &= ~(1 << position)
            yield shift, np.uint64(mask), width


def _validate_max_distance(max_distance) -> int:
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)) \
            or not 0 <= max_distance <= 63:
        raise ValueError(ERROR_MAX_DISTANCE.format(value=max_distance))
    return int(max_distance)


def _validate_hashes(hashes) -> np.ndarray:
    array = np.asarray(hashes)
    if array.ndim != 1:
        raise ValueError(ERROR_HASHES_NOT_1D.format(shape=array.shape))
    return array.astype(np.uint64, copy=False)


def count_bucket_comparisons(hashes, *, max_distance: int, n_queries: int | None = None) -> int:
    """Number of same-bucket comparisons :func:`find_near_duplicate_pairs` would make (its cost), cheaply.

    One counting pass per bucketing pass (no pairs are formed), so a caller can pick a ``max_distance``
    that fits a time budget before searching.
    """
    max_distance = _validate_max_distance(max_distance)
    hashes = _validate_hashes(hashes)
    n = hashes.size
    n_queries = _validate_n_queries(n_queries, n)
    nq = n if n_queries is None else n_queries
    total = 0
    for shift, mask, _ in _passes(n, max_distance, _pair_share(n, n_queries)):
        keys = (hashes >> np.uint64(shift)) & mask
        if int(mask) < (1 << 20) or (n_queries is not None and int(mask) < _DENSE_KEYS):
            codes = keys.astype(np.int64)
            q = np.bincount(codes[:nq], minlength=int(mask) + 1).astype(np.int64)
            r = np.bincount(codes[nq:], minlength=int(mask) + 1).astype(np.int64)
        elif n_queries is None:
            q = np.unique(keys, return_counts=True)[1].astype(np.int64)
            r = np.zeros_like(q)
        elif n == 0:
            break
        else:
            order = np.argsort(keys)
            sorted_keys = keys[order]
            starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_keys)) + 1))
            r = np.add.reduceat((order >= nq).astype(np.int64), starts)
            q = np.diff(np.concatenate((starts, [n]))) - r
        # query-query pairs once, query-other pairs once; other-other pairs are never compared
        total += int((q * (q - 1) // 2 + q * r).sum())
    return total


def find_near_duplicate_pairs(hashes, *, max_distance: int, n_queries: int | None = None) -> HashPairs:
    """Every pair of 64-bit hashes within Hamming distance ``max_distance``, by multi-index hashing.

    Parameters
    ----------
    hashes : array-like of uint64, shape (n,)
        One hash per image (e.g. the ``phash`` column).
    max_distance : int
        Largest Hamming distance (0..63) reported. See the module docstring for why every pair is found
        and what it costs.
    n_queries : int, optional
        When given, only pairs with at least one hash among the first ``n_queries`` are compared and
        reported (e.g. whole-image hashes first, then the hashes of crops: crop-against-crop pairs are
        skipped, which saves most of the work when there are several crops per image).

    Returns
    -------
    HashPairs
        The pairs ``i < j`` with their distances, sorted, each pair once.
    """
    max_distance = _validate_max_distance(max_distance)
    hashes = _validate_hashes(hashes)
    n = hashes.size
    n_queries = _validate_n_queries(n_queries, n)
    is_other = None if n_queries is None else np.arange(n) >= n_queries
    width = np.int64(max(n, 1))
    found_keys, found_d = [], []  # pair key i * n + j (i < j) and distance, compacted as they grow
    n_pending = 0
    n_candidates = n_bounded = 0
    positions_all = np.arange(n)
    for shift, mask, band_width in _passes(n, max_distance, _pair_share(n, n_queries)):
        keys = (hashes >> np.uint64(shift)) & mask
        if is_other is None:
            order = np.argsort(keys)  # introsort (SIMD): several times faster than a stable sort here
        else:
            # Only others sharing a bucket with some query matter: drop the rest before sorting.
            members = np.concatenate((np.arange(n_queries),
                                      n_queries + _in_query_buckets(keys, n_queries, int(mask))))
            member_keys = keys[members]
            if band_width < 64:
                # Queries first within each bucket: one more low bit in the key (the key has < 64 bits).
                order = members[np.argsort((member_keys << np.uint64(1)) | is_other[members].astype(np.uint64))]
            else:
                order = members[np.lexsort((is_other[members], member_keys))]
        m = order.size
        sorted_keys = keys[order]
        # Items sharing a bucket are contiguous in sorted order; compare each with the ``offset``-th next
        # item while they still share a bucket. ``positions`` holds the sorted positions still in play.
        boundaries = np.flatnonzero(np.diff(sorted_keys)) + 1
        starts = np.concatenate(([0], boundaries))
        ends = np.concatenate((boundaries, [m]))
        sizes = ends - starts
        if m == 0 or sizes.max() < 2:
            continue
        bucket_end = np.repeat(ends, sizes)  # end (exclusive) of each sorted position's bucket
        in_play = bucket_end - positions_all[:m] > 1
        if is_other is not None:
            # Only queries start a comparison; the later items of their bucket are queries or others.
            in_play &= ~is_other[order]
        positions = np.flatnonzero(in_play)
        # The hashes in sorted order: a comparison reads two of them at increasing positions instead of
        # gathering through ``order`` (two random reads fewer); only the pairs kept are mapped back.
        sorted_hashes = hashes[order]
        offset = 1
        while positions.size:
            # Chunk positions so one step never holds more than _PAIR_CHUNK candidates.
            for start in range(0, positions.size, _PAIR_CHUNK):
                first = positions[start:start + _PAIR_CHUNK]
                distance = popcount(sorted_hashes[first] ^ sorted_hashes[first + offset])
                n_candidates += first.size
                keep = distance <= max_distance
                if keep.any():
                    kept_first = first[keep]
                    a, b = order[kept_first], order[kept_first + offset]
                    found_keys.append(np.minimum(a, b).astype(np.int64) * width + np.maximum(a, b))
                    found_d.append(distance[keep].astype(np.int8))
                    n_pending += int(keep.sum())
                    if n_pending > _COMPACT_AT:
                        # A pair sharing several buckets is found once per bucket: drop repeats as we go so
                        # memory stays proportional to the distinct pairs.
                        found_keys, found_d, dropped = _compact(found_keys, found_d, width)
                        n_bounded += dropped
                        n_pending = 0
            offset += 1
            positions = positions[bucket_end[positions] - positions > offset]
    if not found_keys:
        empty = np.zeros(0, dtype=np.int64)
        return HashPairs(empty, empty.copy(), empty.copy(), n_candidates, n_bounded)
    found_keys, found_d, dropped = _compact(found_keys, found_d, width)
    n_bounded += dropped
    key = found_keys[0]
    return HashPairs(key // width, key % width, found_d[0].astype(np.int64), n_candidates, n_bounded)


#: Comparing every pair directly (blocks of xor + popcount, no sorting, no repeats to drop) costs about 1/25 of
#: a multi-index candidate comparison per pair (measured on the CIFAR-10 hashes: 0.8 ns against 21 ns), which
#: wins when real hashes crowd the buckets: the exact search picks it when it is cheaper by this factor ...
DIRECT_SEARCH_ADVANTAGE = 20
#: ... and never above this many pairs (about 4 s), where multi-index hashing is the only option.
DIRECT_SEARCH_MAX_PAIRS = 5_000_000_000
#: Query rows and hashes per block of the direct comparison (a block's work arrays stay in the caches).
_BLOCK_QUERIES, _BLOCK_HASHES = 64, 4096


def all_pairs_comparisons(n: int, n_queries: int | None = None) -> int:
    """Pairs of ``n`` hashes with at least one among the first ``n_queries`` (all pairs without): the
    comparisons of :func:`find_near_duplicate_pairs_directly`."""
    q = n if n_queries is None else int(n_queries)
    return q * (n - 1) - q * (q - 1) // 2


def direct_search_is_cheaper(hashes, *, max_distance: int, n_queries: int | None = None) -> bool:
    """Whether comparing every pair (:func:`find_near_duplicate_pairs_directly`) costs less than the bucket
    search (:func:`find_near_duplicate_pairs`) on these hashes: at most :data:`DIRECT_SEARCH_MAX_PAIRS` pairs,
    and fewer than :data:`DIRECT_SEARCH_ADVANTAGE` times the bucket comparisons (counted exactly) plus sorting.

    Real hashes crowd some buckets (the CIFAR-10 test set: 128 million bucket comparisons for 200 million
    pairs at radius 16), so up to some tens of thousands of images the direct search wins by far."""
    max_distance = _validate_max_distance(max_distance)
    hashes = _validate_hashes(hashes)
    n = hashes.size
    n_queries = _validate_n_queries(n_queries, n)
    pairs = all_pairs_comparisons(n, n_queries)
    return pairs <= DIRECT_SEARCH_MAX_PAIRS and pairs <= DIRECT_SEARCH_ADVANTAGE * (
        count_bucket_comparisons(hashes, max_distance=max_distance, n_queries=n_queries)
        + sorting_work(n, max_distance=max_distance, n_queries=n_queries))


def find_near_duplicate_pairs_directly(hashes, *, max_distance: int, n_queries: int | None = None) -> HashPairs:
    """The pairs of :func:`find_near_duplicate_pairs` (same arguments, same result) by comparing every pair.

    Each query is compared with every later hash, a block of 64 queries x 4,096 hashes at a time (xor and
    popcount of the whole block: no sorting, no pair met twice); ``n_candidates`` is the number of pairs
    compared (:func:`all_pairs_comparisons`). Quadratic, but about 25 times cheaper per pair than a bucket
    comparison: :func:`direct_search_is_cheaper` tells which to use.
    """
    max_distance = _validate_max_distance(max_distance)
    hashes = _validate_hashes(hashes)
    n = hashes.size
    n_queries = _validate_n_queries(n_queries, n)
    n_queries = n if n_queries is None else n_queries
    i, j, d, n_bounded = compare_all_pairs(hashes, max_distance=max_distance, n_queries=n_queries)
    order = np.lexsort((j, i))
    return HashPairs(i[order], j[order], d[order], all_pairs_comparisons(n, n_queries), n_bounded)


def compare_all_pairs(hashes: np.ndarray, *, max_distance: int, n_queries: int,
                      with_distance: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """``(i, j, distance, n_bounded)`` of :func:`find_near_duplicate_pairs_directly` in the order found, not
    sorted (``distance`` None without ``with_distance``), for callers that sort or deduplicate the pairs anyway.

    Each query keeps its first :data:`MAX_LINKS_PER_HASH` links (smallest ``j``); ``n_bounded`` counts the
    links found beyond that and dropped. ``hashes`` must be validated (uint64, 1-D) and ``n_queries`` an int."""
    n = hashes.size
    found_i, found_j, found_d = [], [], []
    n_bounded = 0
    counts = np.empty((_BLOCK_QUERIES, _BLOCK_HASHES), dtype=np.uint64)
    for start in range(0, n_queries, _BLOCK_QUERIES):
        stop = min(start + _BLOCK_QUERIES, n_queries)
        queries = hashes[start:stop, None]
        rows = np.arange(start, stop)[:, None]
        kept = np.zeros(stop - start, dtype=np.int64)  # links kept so far by each query of the block
        for first in range(start, n, _BLOCK_HASHES):
            last = min(first + _BLOCK_HASHES, n)
            block = np.bitwise_xor(queries, hashes[None, first:last], out=counts[:stop - start, :last - first])
            distance = popcount(block)
            close = distance <= max_distance
            if first < stop:  # the block overlaps the query rows: each pair once, i < j
                close &= np.arange(first, last)[None, :] > rows
            per_row = np.count_nonzero(close, axis=1)
            if (kept + per_row > MAX_LINKS_PER_HASH).any():
                # Crowding bound: a query keeps its first MAX_LINKS_PER_HASH links; the rest are counted.
                close &= np.cumsum(close, axis=1) + kept[:, None] <= MAX_LINKS_PER_HASH
                n_bounded += int((kept + per_row - np.minimum(kept + per_row, MAX_LINKS_PER_HASH)).sum())
                per_row = np.minimum(kept + per_row, MAX_LINKS_PER_HASH) - kept
            kept += per_row
            flat = np.flatnonzero(close)  # (1-D: several times faster than a 2-D nonzero)
            if flat.size:
                a, b = np.divmod(flat, last - first)
                found_i.append(a + start)
                found_j.append(b + first)
                if with_distance:
                    found_d.append(distance.ravel()[flat].astype(np.int64))
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy() if with_distance else None, n_bounded
    i, j = (np.concatenate(values).astype(np.int64) for values in (found_i, found_j))
    return i, j, np.concatenate(found_d).astype(np.int64) if with_distance else None, n_bounded


def _compact(keys: list, distances: list, width) -> tuple[list, list, int]:
    """Merge the found pair keys ``i * width + j`` into one sorted array without repeats (and their distances),
    keeping the first :data:`MAX_LINKS_PER_HASH` pairs of each ``i`` (smallest ``j``); also the number dropped."""
    key = np.concatenate(keys)
    distance = np.concatenate(distances)
    key, first = unique_sorted(key, return_index=True)
    distance = distance[first]
    if key.size > MAX_LINKS_PER_HASH:
        i = key // width
        starts = np.flatnonzero(np.concatenate(([True], i[1:] != i[:-1])))
        run = np.diff(np.concatenate((starts, [i.size])))
        if run.max() > MAX_LINKS_PER_HASH:
            # rank of each pair within its i's run (the keys are sorted, so by j)
            rank = np.arange(i.size) - np.repeat(starts, run)
            keep = rank < MAX_LINKS_PER_HASH
            return [key[keep]], [distance[keep]], int(key.size - keep.sum())
    return [key], [distance], 0


def _normalise(embeddings) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0 or not np.isfinite(array).all():
        raise ValueError(ERROR_EMBEDDINGS_SHAPE.format(shape=array.shape))
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.where(norms > 0, norms, 1.0), dtype=np.float32)


#: Exact embedding search compares every pair of rows (``n * n`` similarities): quadratic, about 40 s at 100,000
#: rows on 2 shared cores. Above this many pairs (about 44,700 rows) the neighbours come from an approximate
#: search instead, when faiss is installed: a hierarchical navigable small-world graph (HNSW; Malkov and
#: Yashunin 2018), whose cost grows as ``n log n``. What it can miss: a row's true nearest neighbours are
#: returned with recall about 0.99 (measured on the 100k bench embeddings: 98.8 % of the exact 10 nearest,
#: the nearest other row itself 99.75 %), so an embedding near-duplicate link can be missed and the mean
#: neighbour distance (outlier score) can come out slightly larger. Without faiss the search stays exact.
EMBEDDING_EXACT_MAX_PAIRS = 2_000_000_000
#: HNSW graph degree, construction and search breadths (faiss's defaults for the first two; a search breadth
#: of 32 for 11 neighbours, at which the recall above was measured). The graph is built on one thread, so the
#: result does not depend on thread timing.
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 16, 40, 32


def _knn_chunks(unit: np.ndarray, k: int, chunk: int, exact: bool = True):
    """Yield ``(start, similarities, indices)`` of the ``k + 1`` nearest rows of each row (itself included),
    ``chunk`` query rows at a time (float64, int64); with ``exact=False`` (faiss only) from an HNSW graph
    (:data:`EMBEDDING_EXACT_MAX_PAIRS`).

    With faiss the queries are read back from the index's own copy of the rows (the same float32 values), and
    the generator drops its reference to ``unit`` once the index holds them: a caller that keeps no reference
    either frees it (328 MB at 1.28M images x 64)."""
    n = unit.shape[0]
    kk = min(k + 1, n)
    try:
        import faiss  # optional, fast exact inner-product search

        if exact:
            index = faiss.IndexFlatIP(unit.shape[1])
            index.add(unit)
        else:
            index = faiss.IndexHNSWFlat(unit.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = max(HNSW_EF_SEARCH, kk)
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)  # insertion order fixed: the same graph on every run
            try:
                index.add(unit)
            finally:
                faiss.omp_set_num_threads(threads)
        unit = None
        search = lambda start, stop: index.search(index.reconstruct_n(start, stop - start), kk)  # noqa: E731
    except ImportError:
        from sklearn.neighbors import NearestNeighbors

        model = NearestNeighbors(n_neighbors=kk, metric="cosine").fit(unit)

        def search(start, stop):
            dist, idx = model.kneighbors(unit[start:stop])
            return 1.0 - dist, idx
    for start in range(0, n, chunk):
        s, i = search(start, min(n, start + chunk))
        yield start, np.asarray(s, dtype=np.float64), np.asarray(i, dtype=np.int64)


def find_embedding_neighbours(embeddings, *, k: int = 10, threshold: float = 0.995,
                              chunk_size: int = 4096) -> EmbeddingNeighbours:
    """Near-duplicate pairs and neighbour distances from embeddings (cosine similarity).

    Parameters
    ----------
    embeddings : array-like of float, shape (n, d)
        One embedding per image (e.g. the model's penultimate layer).
    k : int
        Neighbours searched per row; pairs beyond a row's ``k`` nearest are not reported.
    threshold : float
        Smallest cosine similarity of a reported pair.
    chunk_size : int
        Rows queried per step (bounds the working memory to ``chunk_size * (k + 1)`` results).

    Returns
    -------
    EmbeddingNeighbours
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(ERROR_K.format(value=k))
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(ERROR_THRESHOLD.format(value=threshold))
    unit = _normalise(embeddings)
    n = unit.shape[0]
    exact = n * n <= EMBEDDING_EXACT_MAX_PAIRS or not _have_faiss()
    chunks = _knn_chunks(unit, int(k), int(chunk_size), exact=exact)
    del unit  # the index holds the rows now (see _knn_chunks)
    # Each chunk of query rows is reduced at once (its mean distance and its close pairs), so no (n, k + 1)
    # array is ever whole: the numbers are those of the whole arrays, row by row and in the same order.
    mean_distance = np.empty(n, dtype=np.float64)
    pair_i, pair_j, pair_s = [], [], []
    for start, sims, idxs in chunks:
        rows = np.broadcast_to(np.arange(start, start + idxs.shape[0], dtype=np.int64)[:, None], idxs.shape)
        other = (idxs != rows) & (idxs >= 0)
        # Mean distance to the k nearest *other* rows (a row's own entry is dropped; exact copies of it are not).
        counts = np.maximum(other.sum(axis=1), 1)
        dist = np.where(other, 1.0 - np.clip(sims, -1.0, 1.0), 0.0)
        # When a row was not returned as its own first neighbour (ties), k+1 others came back: use the k nearest.
        extra = other.sum(axis=1) > k
        if extra.any():
            dist[extra, -1] = 0.0
            counts[extra] = k
        mean_distance[start:start + idxs.shape[0]] = dist.sum(axis=1) / counts
        close = other & (sims >= threshold)
        a, b = rows[close], idxs[close]
        pair_i.append(np.minimum(a, b))
        pair_j.append(np.maximum(a, b))
        pair_s.append(sims[close])
    if n == 1:
        mean_distance = np.zeros(1)
    i, j, s = np.concatenate(pair_i), np.concatenate(pair_j), np.concatenate(pair_s)
    key = i * np.int64(n) + j
    key, first = np.unique(key, return_index=True)
    return EmbeddingNeighbours(i[first], j[first], s[first], mean_distance, exact)


def _have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component id of each of ``n`` items linked by pairs ``(i, j)``; -1 for items with no link.

    Ids are 0, 1, 2, ... in order of each component's smallest member, so they are stable for a given input.
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    labels = np.full(n, -1, dtype=np.int64)
    if i.size == 0:
        return labels
    graph = sparse.coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=(n, n)).tocsr()
    _, component = csgraph.connected_components(graph, directed=False)
    linked = np.zeros(n, dtype=bool)
    linked[i] = True
    linked[j] = True
    # Renumber linked components by their smallest member.
    members = np.flatnonzero(linked)
    _, first_index, inverse = np.unique(component[members], return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(members[first_index]))
    labels[members] = rank[inverse]
    return labels
