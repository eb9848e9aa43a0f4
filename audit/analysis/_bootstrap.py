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
from typing import NamedTuple

import numpy as np

#: Upper bound on the number of values one array of a chunk of replicates may hold (about 8 MB of float64).
DEFAULT_MAX_ELEMENTS = 1_000_000


def family_rng(seed: int, name: str) -> np.random.Generator:
    """A generator seeded from ``seed`` and a stable hash of ``name``.

    Each attribute (or intersection) gets its own stream, so its intervals do not change when other
    attributes are added or removed.
    """
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


class Target(NamedTuple):
    """Where each cell's rows are summed: ``columns[i]`` (``-1``: nowhere), each row adding ``weights[i]``
    (1 when ``weights`` is None), into an array of ``size`` sums."""

    columns: np.ndarray
    weights: np.ndarray | None
    size: int


def indicator(cell_targets: np.ndarray, n_targets: int, *, weights: np.ndarray | None = None) -> Target:
    """Map each cell to the target it is summed into (``-1`` leaves it out); ``weights`` (default 1) is
    what one row of the cell contributes (e.g. the cell's mean confidence)."""
    columns = np.asarray(cell_targets, dtype=np.int64)
    return Target(columns, None if weights is None else np.asarray(weights, dtype=float), int(n_targets))


#: Cells holding at most this many rows are resampled by drawing rows (see :func:`iter_poisson_sums`).
SMALL_CELL = 3


#: Segments longer than this are summed by ``np.add.reduceat`` itself (rare: more cells in one target).
_LONGEST_EMULATED = 129


class _Plan(NamedTuple):
    """How the cells of one size class feed one target (precomputed once).

    Segments (the cells summed into one column) are grouped by length, so that each group is summed with a
    few whole-array additions instead of one tiny reduction per segment and replicate.
    """

    by_length: tuple  # (length, positions (length, n_segments) into the size class, columns, weights or None)
    long: tuple | None  # (order, starts, columns, weights or None) of the segments summed by reduceat


def _plan(cells: np.ndarray, target: Target) -> _Plan:
    columns = target.columns[cells]
    contributing = np.flatnonzero(columns >= 0)
    order = contributing[np.argsort(columns[contributing], kind="stable")]
    weights = None if target.weights is None else target.weights[cells]
    if order.size == 0:
        return _Plan((), None)
    sorted_columns = columns[order]
    starts = np.flatnonzero(np.r_[True, sorted_columns[1:] != sorted_columns[:-1]])
    lengths = np.diff(np.r_[starts, order.size])
    by_length = []
    for length in np.unique(lengths[lengths <= _LONGEST_EMULATED]):
        first = starts[lengths == length]
        positions = order[first[None, :] + np.arange(length)[:, None]]  # (length, n_segments)
        by_length.append((int(length), positions, sorted_columns[first],
                          None if weights is None else weights[positions]))
    long = None
    is_long = lengths > _LONGEST_EMULATED
    if is_long.any():
        long_order = np.concatenate([order[s:s + n] for s, n in zip(starts[is_long], lengths[is_long])])
        long_starts = np.r_[0, np.cumsum(lengths[is_long])[:-1]]
        long = (long_order, long_starts, sorted_columns[starts[is_long]],
                None if weights is None else weights[long_order])
    return _Plan(tuple(by_length), long)


def _pairwise_sum(parts: np.ndarray, first: int, n: int, *, axis: int) -> np.ndarray:
    """``parts`` summed over ``first:first + n`` of ``axis`` (0 or 1) in exactly the order of numpy's
    pairwise summation (``n < 8``: one after the other; up to 128: eight interleaved partial sums, combined
    pairwise, then the remainder; beyond: the two halves, split at a multiple of 8), so the result is
    bitwise the same as numpy's reduction."""
    def part(i):
        return parts[i] if axis == 0 else parts[:, i]

    if n < 8:
        total = part(first).copy()
        for i in range(first + 1, first + n):
            total += part(i)
        return total
    if n <= 128:
        partial = [part(first + j).copy() for j in range(8)]
        i = 8
        while i < n - n % 8:
            for j in range(8):
                partial[j] += part(first + i + j)
            i += 8
        total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5])
                                                                           + (partial[6] + partial[7]))
        for i in range(i, n):
            total += part(first + i)
        return total
    half = n // 2
    half -= half % 8
    return _pairwise_sum(parts, first, half, axis=axis) + _pairwise_sum(parts, first + half, n - half, axis=axis)


def _iter_segment_sums(values_by_cell: np.ndarray, plan: _Plan) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(columns, sums)``: per-replicate sums of each segment's cells (x weight), ``sums`` of shape
    (segments, replicates), a group of segments at a time.

    ``values_by_cell`` holds one row per cell (cells x replicates), so that gathering a segment's cells
    copies whole rows. Bitwise equal to ``np.add.reduceat(values[:, order] * weights, starts, axis=1)``,
    whose reduction adds a segment's first value to the pairwise sum of the others
    (:func:`_pairwise_sum`): the bootstrap's numbers must not change when this code gets faster.
    """
    for length, positions, columns, weights in plan.by_length:
        parts = values_by_cell[positions]  # (length, n_segments, replicates)
        if weights is not None:
            parts *= weights[:, :, None]
        if length == 1:
            yield columns, parts[0]
        else:
            yield columns, parts[0] + _pairwise_sum(parts, 1, length - 1, axis=0)
    if plan.long is not None:
        order, starts, columns, weights = plan.long
        block = values_by_cell[order].T
        if weights is not None:
            block = block * weights
        yield columns, np.add.reduceat(np.ascontiguousarray(block), starts, axis=1).T


def _segment_sums(values_by_cell: np.ndarray, plan: _Plan, n_columns: int) -> np.ndarray:
    """The sums of :func:`_iter_segment_sums` in their columns, shape (replicates, ``n_columns``)."""
    n_segments = sum(columns.size for _, _, columns, _ in plan.by_length) + (
        0 if plan.long is None else plan.long[2].size)
    if 8 * n_segments < n_columns:
        # few columns get sums (e.g. the few large cells of a confusion matrix): write them in place
        out = np.zeros((values_by_cell.shape[1], n_columns))
        for columns, sums in _iter_segment_sums(values_by_cell, plan):
            out[:, columns] = sums.T
        return out
    out = np.zeros((n_columns, values_by_cell.shape[1]))
    for columns, sums in _iter_segment_sums(values_by_cell, plan):
        out[columns] = sums
    return np.ascontiguousarray(out.T)


def iter_poisson_sums(cell_counts: np.ndarray, targets: Sequence[Target], *, n_boot: int,
                      rng: np.random.Generator, width: int | None = None,
                      max_elements: int = DEFAULT_MAX_ELEMENTS) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield Poisson-bootstrap replicates of per-target sums, a chunk of replicates at a time.

    Each cell holding ``c`` rows gets an independent Poisson(``c``) count in every replicate. Large cells
    draw that count directly. Small cells (at most ``SMALL_CELL`` rows; e.g. the scattered off-diagonal
    cells of a 100-class confusion matrix) are resampled by their rows instead, which is exactly
    equivalent and much cheaper when there are many of them: a chunk of ``B`` replicates draws
    ``M ~ Poisson(B R)`` (replicate, row) pairs uniformly with replacement from the ``B R`` pairs of their
    ``R`` rows (a Poissonised multinomial, whose counts per pair, hence per cell and replicate, are
    independent Poisson).

    Parameters
    ----------
    cell_counts : ndarray of int, shape (n_cells,)
        Rows in each cell.
    targets : sequence of Target
        From :func:`indicator`; one array of sums is yielded per target.
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
    sums : list of ndarray, each (size, target.size)
        Replicate sums for each target.
    """
    cell_counts = np.asarray(cell_counts, dtype=np.int64)
    small = np.flatnonzero(cell_counts <= SMALL_CELL)
    large = np.flatnonzero(cell_counts > SMALL_CELL)
    rows_of_small = np.repeat(small, cell_counts[small])
    n_rows = rows_of_small.size
    per_replicate = max([large.size, n_rows, width or 1] + [t.size for t in targets])
    chunk = int(max(1, min(n_boot, max_elements // max(per_replicate, 1))))
    large_lam = cell_counts[large].astype(float)
    large_plans = [_plan(large, target) for target in targets]
    # Small cells, row by row: the target column of every row (``size`` = nowhere, dropped afterwards).
    row_columns = [np.where(t.columns[rows_of_small] >= 0, t.columns[rows_of_small], t.size) for t in targets]
    row_weights = [None if t.weights is None else t.weights[rows_of_small] for t in targets]
    row_used = [bool((c < t.size).any()) for c, t in zip(row_columns, targets)]
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        if large.size:
            # One row per cell, so that gathering a target's cells copies whole rows.
            draws = rng.poisson(large_lam, size=(size, large.size)).T.astype(np.float64, order="C")
            sums = [_segment_sums(draws, plan, t.size) for plan, t in zip(large_plans, targets)]
        else:
            sums = [np.zeros((size, t.size)) for t in targets]
        if n_rows:
            # Poissonised multinomial over (replicate, row) pairs: independent Poisson(1) per pair.
            picks = rng.integers(0, size * n_rows, size=int(rng.poisson(size * n_rows)))
            replicate, row = np.divmod(picks, n_rows)
            for target, columns, weights, used, out in zip(targets, row_columns, row_weights, row_used, sums):
                if not used:
                    continue
                flat = replicate * (target.size + 1) + columns[row]
                counted = np.bincount(flat, weights=None if weights is None else weights[row],
                                      minlength=size * (target.size + 1))
                out += counted.reshape(size, target.size + 1)[:, :target.size]
        yield size, sums
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
    q_low, q_high = percentile_interval(replicates, np.full(np.shape(estimate), np.nan),
                                        confidence_level=confidence_level, n=n, widen=False)
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


def iter_dirichlet_sums(cell_weights: np.ndarray, targets: Sequence[Target], *, n_draws: int,
                        rng: np.random.Generator, max_elements: int = DEFAULT_MAX_ELEMENTS
                        ) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield posterior draws of per-target sums, a chunk of draws at a time (Bayesian bootstrap).

    Each cell with weight ``w`` (its count, plus any prior pseudo-count) gets an independent Gamma(``w``, 1)
    weight in every draw: normalised, these are Dirichlet(``w``) cell probabilities (Rubin's Bayesian
    bootstrap; with pseudo-counts, a Dirichlet posterior). Unlike the Poisson or multinomial bootstrap, a
    cell with a prior pseudo-count but no observation still varies, so a group without errors does not get
    a zero-width interval. Ratios of the yielded sums (recall, F1) are scale-free, so no normalisation is
    needed.
    """
    weights = np.asarray(cell_weights, dtype=float)
    cells = np.flatnonzero(weights > 0)
    plans = [_plan(cells, target) for target in targets]
    per_draw = max([cells.size] + [t.size for t in targets])
    chunk = int(max(1, min(n_draws, max_elements // max(per_draw, 1))))
    shape = weights[cells]
    done = 0
    while done < n_draws:
        size = min(chunk, n_draws - done)
        # One row per cell, so that gathering a target's cells copies whole rows.
        draws = np.ascontiguousarray(rng.standard_gamma(shape, size=(size, cells.size)).T)
        sums = [_segment_sums(draws, plan, t.size) for plan, t in zip(plans, targets)]
        yield size, sums
        done += size
