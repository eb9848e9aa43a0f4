"""Small-matrix arithmetic of confident learning (Northcutt, Jiang & Chuang, JAIR 2021).

Everything here works on K x K matrices or length-K vectors, never on the N x K probabilities; the
streaming driver in :mod:`audit.analysis.label_noise` feeds it per-chunk sufficient statistics.

The numbers are meant to agree *exactly* with the reference implementation (cleanlab 2.9,
``cleanlab.count`` and ``cleanlab.filter``; Apache-2.0) on the same inputs, so the order of floating-point
operations, the rounding rules and the dtypes deliberately follow the published algorithm step by step.
cleanlab itself is never imported here (it is only a test and benchmark reference).
"""
from __future__ import annotations

import numpy as np

#: Fuzzy-equality margin of the reference algorithm (added to the given label's probability before the
#: final "is the given label the prediction?" check, subtracted from the per-class thresholds).
FLOATING_POINT_COMPARISON = 1e-6
#: Lower bound of a per-class threshold (must exceed ``FLOATING_POINT_COMPARISON``).
THRESHOLD_LOWER_BOUND = 2 * FLOATING_POINT_COMPARISON
#: Threshold of a class nobody is labelled as: no probability reaches it, so nothing is counted there.
ABSENT_CLASS_THRESHOLD = 2
#: Guard against division by zero.
TINY_VALUE = 1e-100
#: Lower bound of the estimated true-class prior.
PRIOR_LOWER_BOUND = 1e-6


def class_thresholds(class_means: list) -> np.ndarray:
    """Per-class confidence thresholds from the mean self-confidence of each class.

    Parameters
    ----------
    class_means : list
        For each class, ``np.mean`` of the probability of that class over the images *labelled* as it
        (a numpy scalar of the probabilities' dtype), or ``None`` for a class with no images.

    Returns
    -------
    ndarray (K,)
        ``t_k`` = mean self-confidence of class ``k``, clipped below at ``THRESHOLD_LOWER_BOUND``; absent
        classes get ``ABSENT_CLASS_THRESHOLD`` (unreachable). The dtype follows numpy's promotion of the
        list exactly as the reference does (float32 probabilities give float32 thresholds unless a class is
        absent), which matters for the ``>=`` comparisons at the boundary.
    """
    values = [ABSENT_CLASS_THRESHOLD if mean is None else mean for mean in class_means]
    return np.clip(values, a_min=THRESHOLD_LOWER_BOUND, a_max=None)


def round_preserving_sum(values) -> np.ndarray:
    """Round to integers while keeping the (rounded) total: the largest rounding losses are bumped up."""
    floats = np.asarray(values, dtype=float)
    ints = floats.round()
    target = np.sum(floats).round()
    current = np.sum(ints).round()
    while abs(current - target) > FLOATING_POINT_COMPARISON:
        difference = np.round(target - current)
        increment = -1 if int(difference < 0.0) else 1
        n_changes = min(int(abs(difference)), len(values))
        # Same tie order as the reference (numpy's default argsort on the rounding residuals).
        indices = np.argsort(floats - ints)[::-increment][:n_changes]
        for index in indices:
            ints[index] = ints[index] + increment
        current = np.sum(ints).round()
    return ints.astype(int)


def round_preserving_row_totals(matrix: np.ndarray) -> np.ndarray:
    """Round each row of ``matrix`` with :func:`round_preserving_sum`."""
    return np.apply_along_axis(func1d=round_preserving_sum, axis=1, arr=matrix).astype(int)


def calibrate_confident_joint(confident_joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Rescale the confident joint so row ``i`` sums to the number of images labelled ``i`` and the
    whole matrix to N, then round to integers preserving row totals.

    ``confident_joint[i, j]`` counts images *given* label ``i`` that are confidently of class ``j``.
    """
    calibrated = (confident_joint.T / np.clip(confident_joint.sum(axis=1), a_min=TINY_VALUE, a_max=None)
                  * label_counts).T
    calibrated = calibrated / np.clip(np.sum(calibrated), a_min=TINY_VALUE, a_max=None) * np.sum(label_counts)
    return round_preserving_row_totals(calibrated)


def estimate_joint_from_calibrated(calibrated_joint: np.ndarray) -> np.ndarray:
    """``P(given = i, true = j)``: the calibrated confident joint divided by its total."""
    return calibrated_joint / np.clip(float(np.sum(calibrated_joint)), a_min=TINY_VALUE, a_max=None)


def _clip_noise_rates(noise_matrix: np.ndarray) -> np.ndarray:
    """Clip off-diagonal rates to [0, 0.9999], keep the diagonal, renormalise columns to sum to 1."""
    diagonal = np.diagonal(noise_matrix)
    clipped = np.clip(noise_matrix, 0, 0.9999)
    np.fill_diagonal(clipped, diagonal)
    return clipped / np.clip(clipped.sum(axis=0), a_min=TINY_VALUE, a_max=None)


def _clip_values(x: np.ndarray, low: float, high: float, new_sum: float) -> np.ndarray:
    clipped = np.clip(x, low, high)
    return clipped * new_sum / np.clip(np.sum(clipped), a_min=TINY_VALUE, a_max=None)


def _inverse_from_noise(py, noise_matrix, ps):
    joint = noise_matrix * py
    inverse = joint.T / np.clip(ps, a_min=TINY_VALUE, a_max=None)
    return _clip_noise_rates(inverse)


def _noise_from_inverse(ps, inverse_noise_matrix, py):
    joint = (inverse_noise_matrix * ps).T
    noise = joint / np.clip(py, a_min=TINY_VALUE, a_max=None)
    return _clip_noise_rates(noise)


def _prior_from_matrices(ps, noise_matrix, inverse_noise_matrix):
    # Ratio of diagonals (the "cnt" estimator): avoids dividing by possibly-zero off-diagonal rates.
    py = inverse_noise_matrix.diagonal() / np.clip(noise_matrix.diagonal(), a_min=TINY_VALUE, a_max=None) * ps
    return _clip_values(py, low=PRIOR_LOWER_BOUND, high=1.0, new_sum=1.0)


def estimate_latent(calibrated_joint: np.ndarray, label_counts: np.ndarray, *, converge: bool = True):
    """Noise matrix, inverse noise matrix and true-class prior from the calibrated confident joint.

    Returns
    -------
    py : ndarray (K,)
        Estimated prior of the *true* classes.
    noise_matrix : ndarray (K, K)
        ``P(given = i | true = j)`` (columns sum to 1).
    inverse_noise_matrix : ndarray (K, K)
        ``P(true = i | given = j)`` (columns sum to 1).

    With ``converge`` the three are iterated (5 x 3 rounds) until they agree algebraically, then clipped
    (the reference's ``converge_latent_estimates=True``, its default when starting from probabilities).
    """
    n = float(np.sum(label_counts))
    ps = label_counts / n
    given_counts = calibrated_joint.sum(axis=1).astype(float)
    true_counts = calibrated_joint.sum(axis=0).astype(float)
    noise_matrix = calibrated_joint / np.clip(true_counts, a_min=TINY_VALUE, a_max=None)
    inverse_noise_matrix = calibrated_joint.T / np.clip(given_counts, a_min=TINY_VALUE, a_max=None)
    py = _prior_from_matrices(ps, noise_matrix, inverse_noise_matrix)
    noise_matrix = _clip_noise_rates(noise_matrix)
    inverse_noise_matrix = _clip_noise_rates(inverse_noise_matrix)
    if converge:
        for _ in range(3):
            for _ in range(5):
                inverse_noise_matrix = _inverse_from_noise(py, noise_matrix, ps)
                py = _prior_from_matrices(ps, noise_matrix, inverse_noise_matrix)
            noise_matrix = _noise_from_inverse(ps, inverse_noise_matrix, py)
        py = _clip_values(py, low=1e-5, high=1.0, new_sum=1.0)
        noise_matrix = _clip_noise_rates(noise_matrix)
        inverse_noise_matrix = _clip_noise_rates(inverse_noise_matrix)
    return py, noise_matrix, inverse_noise_matrix


def prune_counts(calibrated_joint: np.ndarray, *, min_examples_per_class: int = 1) -> np.ndarray:
    """How many images to remove for every (true, given) pair under "prune by noise rate".

    Returns
    -------
    ndarray (K, K) of int
        ``counts[j, k]``: among images *given* label ``k``, the number whose true class is estimated to be
        ``j`` (transposed relative to the joint). The diagonal is raised to at least
        ``min_examples_per_class`` (taking the difference evenly out of the column's non-zero noise
        counts) and rows are rounded preserving their totals, exactly as the reference does.
    """
    matrix = calibrated_joint.T
    diagonal = np.diagonal(matrix)
    new_diagonal = np.maximum(diagonal, min_examples_per_class)
    increase = new_diagonal - diagonal
    n_noise_cells = np.maximum(np.count_nonzero(matrix, axis=0) - 1.0, 1.0)
    adjusted = matrix - increase / n_noise_cells
    adjusted[adjusted < 0] = 0
    np.fill_diagonal(adjusted, new_diagonal)
    # frac_noise = 1: the reference's "reduce by frac_noise" step then only truncates to integers.
    reduced = adjusted * 1.0
    np.fill_diagonal(reduced, adjusted.diagonal())
    np.fill_diagonal(reduced, adjusted.diagonal() + np.sum(adjusted - reduced, axis=0))
    return round_preserving_row_totals(reduced.astype(int)).astype(int)
