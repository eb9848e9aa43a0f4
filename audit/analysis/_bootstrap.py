"""Vectorised Poisson bootstrap over aggregated cells.

Every metric of :mod:`audit.analysis.group_performance` is a function of a few counts or sums per group
(true positives, true and predicted counts per class; correct counts and confidence sums per calibration
bin). Those are sums over *cells*: rows that share a group, a true class and a predicted class (or a
group, a confidence bin and correctness). Resampling the rows is therefore the same as resampling the
cells' counts, and every group, every metric and every replicate can be computed at once with numpy.

We use the Poisson bootstrap (each row's replicate weight is Poisson(1), independently; a cell holding
``c`` rows then gets a Poisson(``c``) count): it needs no per-group bookkeeping, gives every group and its
complement ("the rest") replicates from one draw, and is a standard, asymptotically equivalent stand-in
for the multinomial bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012). Like fairlearn's
``MetricFrame(n_boot=...)`` (which resamples the whole data set), group sizes vary between replicates.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import sparse

#: Upper bound on the number of float64 values one chunk of replicates may hold (about 32 MB).
DEFAULT_MAX_ELEMENTS = 4_000_000


def family_rng(seed: int, name: str) -> np.random.Generator:
    """A generator seeded from ``seed`` and a stable hash of ``name``.

    Each attribute (or intersection) gets its own stream, so its intervals do not change when other
    attributes are added or removed.
    """
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def indicator(cell_targets: np.ndarray, n_targets: int, *, weights: np.ndarray | None = None) -> sparse.csr_matrix:
    """Sparse ``(n_cells, n_targets)`` matrix mapping each cell to the target it is summed into.

    ``cell_targets[i] = -1`` leaves cell ``i`` out. ``weights`` (default 1) is what one row of the cell
    contributes (e.g. the cell's mean confidence).
    """
    cell_targets = np.asarray(cell_targets, dtype=np.int64)
    keep = cell_targets >= 0
    rows = np.flatnonzero(keep)
    data = np.ones(rows.size) if weights is None else np.asarray(weights, dtype=float)[keep]
    return sparse.csr_matrix((data, (rows, cell_targets[keep])), shape=(cell_targets.size, n_targets))


def iter_poisson_sums(cell_counts: np.ndarray, targets: Sequence[sparse.spmatrix], *, n_boot: int,
                      rng: np.random.Generator, width: int | None = None,
                      max_elements: int = DEFAULT_MAX_ELEMENTS) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield bootstrap replicates of per-target sums, a chunk of replicates at a time.

    Parameters
    ----------
    cell_counts : ndarray of int, shape (n_cells,)
        Rows in each cell.
    targets : sequence of sparse matrices, each (n_cells, n_targets_j)
        From :func:`indicator`; replicate sums are ``weights @ target``.
    n_boot : int
        Total number of replicates.
    rng : numpy Generator
    width : int, optional
        Largest array width the caller derives per replicate (e.g. groups x classes), used to size chunks.
    max_elements : int
        Chunks hold at most about this many values per array.

    Yields
    ------
    size : int
        Replicates in this chunk.
    sums : list of ndarray, each (size, n_targets_j)
        Replicate sums for each target matrix.
    """
    cell_counts = np.asarray(cell_counts, dtype=float)
    widest = max([cell_counts.size, width or 1] + [t.shape[1] for t in targets])
    chunk = int(max(1, min(n_boot, max_elements // max(widest, 1))))
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        weights = rng.poisson(cell_counts, size=(size, cell_counts.size)).astype(np.float64)
        yield size, [np.asarray(weights @ target) for target in targets]
        done += size


def percentile_interval(replicates: np.ndarray, estimate: np.ndarray, *, confidence_level: float,
                        n: np.ndarray | None = None, widen: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of ``replicates`` (NaN replicates ignored), widened to contain
    ``estimate``.

    With ``n`` (the sample size behind each column) the *expanded* percentile interval is used
    (Hesterberg 2015): the tail probability is ``Phi(-sqrt(n / (n - 1)) * t_{n-1, 1 - tail})`` instead of
    ``tail``, which corrects the percentile interval's known under-coverage in small samples and tends to
    the plain percentile interval as ``n`` grows. Quantiles interpolate linearly between order statistics
    (numpy's default). Where every replicate is NaN (or the estimate is NaN) the bounds are NaN. With
    ``widen=False`` the raw quantiles are returned (``estimate`` then only gives the shape).
    """
    from scipy import stats

    tail = (1.0 - confidence_level) / 2.0
    replicates = np.asarray(replicates, dtype=float)
    estimate = np.asarray(estimate, dtype=float)
    shape = estimate.shape
    if replicates.shape[0] == 0:
        return np.full(shape, np.nan), np.full(shape, np.nan)
    flat = replicates.reshape(replicates.shape[0], -1)
    tails = np.full(flat.shape[1], tail)
    if n is not None:
        n_flat = np.broadcast_to(np.asarray(n, dtype=float), shape).ravel()
        ok = n_flat >= 2
        dof = np.where(ok, n_flat - 1, 1)
        expanded = stats.norm.cdf(-np.sqrt(np.where(ok, n_flat / dof, 1.0)) * stats.t.ppf(1.0 - tail, dof))
        tails = np.where(ok, expanded, tail)
    ordered = np.sort(flat, axis=0)  # NaN sort last
    count = np.isfinite(flat).sum(axis=0)
    columns = np.arange(flat.shape[1])

    def quantile(q):
        position = q * np.maximum(count - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(count - 1, 0))
        fraction = position - below
        low_value = ordered[below, columns]
        high_value = ordered[above, columns]
        return np.where(count > 0, low_value + fraction * (high_value - low_value), np.nan)

    low = quantile(tails).reshape(shape)
    high = quantile(1.0 - tails).reshape(shape)
    if not widen:
        return low, high
    low = np.fmin(low, estimate)
    high = np.fmax(high, estimate)
    bad = ~np.isfinite(estimate) | (count.reshape(shape) == 0)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def basic_interval(replicates: np.ndarray, estimate: np.ndarray, *, confidence_level: float,
                   n: np.ndarray | None = None, lower: float = 0.0, upper: float = 1.0):
    """Basic (reverse-percentile) bootstrap interval ``[2 t - q_hi, 2 t - q_lo]``, clipped to ``[lower,
    upper]`` and widened to contain ``estimate``.

    Unlike the percentile interval it corrects the estimator's bias to first order: for the expected
    calibration error, whose plug-in estimate is biased upwards in small groups, the percentile interval
    sits above the truth while this one does not.
    """
    q_low, q_high = percentile_interval(replicates, np.full(np.shape(estimate), np.nan), confidence_level=confidence_level,
                                        n=n, widen=False)
    estimate = np.asarray(estimate, dtype=float)
    low = np.clip(2 * estimate - q_high, lower, upper)
    high = np.clip(2 * estimate - q_low, lower, upper)
    low = np.fmin(low, estimate)
    high = np.fmax(high, estimate)
    bad = ~np.isfinite(estimate) | ~np.isfinite(q_low)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def bootstrap_p_value_lower(estimate: np.ndarray, replicates: np.ndarray, *, bias_correct: bool = False) -> np.ndarray:
    """One-sided p-value that a difference is *below* zero, from its bootstrap standard error.

    ``p = Phi(estimate / sd(replicates))`` (a Wald test with the bootstrap standard error). With
    ``bias_correct`` the estimate is first corrected by the bootstrap bias estimate:
    ``2 estimate - mean(replicates)``. Unlike the
    share of replicates above zero it is not bounded below by ``1 / n_boot``, so it stays usable after
    Holm correction over hundreds of groups. A difference with no bootstrap spread gives ``p = 0`` when
    negative and ``1`` otherwise; NaN where there are fewer than two finite replicates.
    """
    from scipy import stats

    estimate = np.asarray(estimate, dtype=float)
    replicates = np.asarray(replicates, dtype=float)
    finite = np.isfinite(replicates)
    count = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(finite, replicates, 0.0)
        mean = safe.sum(axis=0) / np.maximum(count, 1)
        var = (np.where(finite, replicates - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count - 1, 1)
        sd = np.sqrt(var)
        if bias_correct:
            estimate = 2.0 * estimate - mean
        z = estimate / sd
        p = stats.norm.cdf(z)
    p = np.where(sd <= 1e-15, np.where(estimate < 0, 0.0, 1.0), p)
    return np.where((count >= 2) & np.isfinite(estimate), p, np.nan)
