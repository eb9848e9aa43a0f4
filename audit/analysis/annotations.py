"""Annotation quality: consensus labels, annotator reliability and inter-annotator agreement.

Pure and vectorised (numpy): every function takes integer-coded annotations (one entry per label given:
the image's row, the annotator's index, the class index) and returns arrays or a frozen result. The reader
(:mod:`audit.io.annotations`) turns a user's file into these codes.

Methods (docs/methods.md, "Annotations", says the same with the validation figures):

* **Consensus.** ``majority`` counts votes (ties broken by the model's probabilities when the audit has
  them, else by a seeded coin; every tie is recorded). ``dawid_skene`` is the Dawid & Skene (1979) EM
  model (one confusion matrix per annotator), with each annotator's matrix shrunk towards the pooled
  confusion matrix of all annotators (a Dirichlet prior worth :data:`DEFAULT_SHRINKAGE` labels per row)
  so that an annotator seen on 20 images does not get 100 free parameters. ``crowdlab`` is the same model
  with the model's probabilities as one more, soft, annotator whose confusion matrix is estimated like the
  others' (so its weight is learnt, as in CROWDLAB's weighted ensemble). ``auto`` = ``crowdlab`` when
  probabilities are given, else ``dawid_skene``.
* **Annotator accuracy.** ``accuracy`` = the mean, over the annotator's labels, of the posterior
  probability that the label is right (the image's posterior over the true class from every label and the
  model), which weighs a disagreement on an ambiguous image less than one on a clear image. The interval
  adds (law of total variance) the variance of that mean over a Poisson bootstrap of images with the
  model re-fitted (warm start) to the Bernoulli variance of the labels themselves, and reads the bounds
  off a Beta distribution with that mean and variance.
* **Verdict.** Whether an annotator agrees with co-annotators less than annotators of *the same images*
  do: conditionally on each image's multiset of labels, an annotator exchangeable with the others would
  have given a uniformly random member of it; the sum over the annotator's images of the share of
  co-annotators agreeing has an exact mean and variance under that null, giving a one-sided z test whose
  p-values are Holm-adjusted over annotators (family-wise error). The image's difficulty is conditioned
  on, so an annotator who drew hard images is not flagged for it.
* **Agreement.** Krippendorff's alpha (nominal), from the coincidence matrix, with a Poisson bootstrap of
  images for the interval; per class as the alpha of the class-vs-rest recoding; per group; per annotator
  and group as ``1 - D_o / D_e`` over the pairs that involve the annotator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import stats

from audit.analysis._stats import adjust_p_values

METHODS = ("auto", "majority", "dawid_skene", "crowdlab")
VERDICT_WORSE = "worse_than_rest"
VERDICT_NO_GAP = "no_evidence_of_gap"
VERDICT_INSUFFICIENT = "insufficient_data"
#: Pseudo-labels per row of the Dirichlet prior that shrinks each annotator's confusion matrix towards the
#: pooled one.
DEFAULT_SHRINKAGE = "auto"
#: Annotators with fewer labels on images that someone else labelled too get ``insufficient_data``.
DEFAULT_MIN_LABELS = 20

ERROR_METHOD = "consensus method must be one of auto, majority, dawid_skene, crowdlab; got {value!r}"
ERROR_CROWDLAB_NEEDS_PROBABILITIES = ("consensus method crowdlab needs model probabilities (--model or "
                                      "--predictions); use dawid_skene or majority without them")
ERROR_SHAPES = "annotations: item, annotator and label must be 1-D arrays of one length; got {shapes}"
ERROR_CODES = "annotations: {name} codes must lie in 0..{last}; found {value}"
ERROR_PROBABILITIES_SHAPE = "annotations: probabilities must have shape ({n}, {k}); got {shape}"


# --------------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Annotations:
    """Integer-coded annotations: one entry per label given.

    Attributes
    ----------
    item, annotator, label : ndarray of int64
        Row of the image (0..n_items-1), index of the annotator (0..len(annotators)-1), class index.
    n_items : int
        Number of images (rows of ``images.parquet``), including those without annotation.
    annotators : tuple of str
        Annotator ids, in index order.
    n_classes : int
    seconds : ndarray of float or None
        Time spent on each label (NaN where unknown).
    """

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    n_items: int
    annotators: tuple
    n_classes: int
    seconds: np.ndarray | None = None

    def __post_init__(self):
        shapes = {np.shape(self.item), np.shape(self.annotator), np.shape(self.label)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(ERROR_SHAPES.format(shapes=sorted(shapes)))
        for name, values, size in (("item", self.item, self.n_items), ("annotator", self.annotator,
                                                                       len(self.annotators)),
                                   ("label", self.label, self.n_classes)):
            if len(values) and (values.min() < 0 or values.max() >= size):
                bad = values.min() if values.min() < 0 else values.max()
                raise ValueError(ERROR_CODES.format(name=name, last=size - 1, value=int(bad)))

    @property
    def n_annotators(self) -> int:
        return len(self.annotators)

    @cached_property
    def cell_by_item(self):
        """Sparse (n_annotator * n_classes, n_items) matrix: how many labels ``l`` annotator ``j`` gave image
        ``i``, at row ``j * n_classes + l`` (EM's sums become sparse products)."""
        from scipy import sparse

        rows = self.annotator * self.n_classes + self.label
        return sparse.csr_matrix((np.ones(len(rows)), (rows, self.item)),
                                 shape=(self.n_annotators * self.n_classes, self.n_items))

    @cached_property
    def labelled(self) -> np.ndarray:
        """(n_items,) bool: the image has at least one label."""
        return np.bincount(self.item, minlength=self.n_items) > 0

    @cached_property
    def item_by_cell(self):
        return self.cell_by_item.T.tocsr()


def compute_vote_counts(item, label, *, n_items: int, n_classes: int, weights=None) -> np.ndarray:
    """(n_items, n_classes) number of labels of each class given to each image (float)."""
    flat = np.asarray(item, dtype=np.int64) * n_classes + np.asarray(label, dtype=np.int64)
    counts = np.bincount(flat, weights=weights, minlength=n_items * n_classes)
    return counts.reshape(n_items, n_classes).astype(float)


# --------------------------------------------------------------------------------------------------------------
# consensus
# --------------------------------------------------------------------------------------------------------------
def estimate_majority_vote(votes: np.ndarray, *, probabilities=None, seed: int = 0):
    """Majority vote per image.

    Returns
    -------
    consensus : ndarray of int64
        The most frequent label (-1 for an image without annotation).
    tie : ndarray of bool
        Several classes had the top count; the winner was the tied class with the highest model probability
        when ``probabilities`` is given, else a seeded uniformly random tied class.
    """
    votes = np.asarray(votes, dtype=float)
    top = votes.max(axis=1, keepdims=True)
    tied = (votes == top) & (top > 0)
    tie = tied.sum(axis=1) > 1
    if probabilities is not None:
        breaker = np.asarray(probabilities, dtype=float)
    else:
        breaker = np.random.default_rng(seed).random(votes.shape)
    consensus = np.where(tied, breaker + 1.0, -np.inf).argmax(axis=1)
    consensus = np.where(top[:, 0] > 0, consensus, -1).astype(np.int64)
    return consensus, tie


@dataclass(frozen=True)
class DawidSkeneFit:
    """A fitted Dawid-Skene model.

    Attributes
    ----------
    posterior : ndarray (n_items, n_classes)
        Posterior probability of each true class per image (the class prior for images without labels).
    confusion : ndarray (n_annotators, n_classes, n_classes)
        ``confusion[j, c, l]`` = P(annotator j says l | true class c).
    prior : ndarray (n_classes,)
        Class prior.
    model_confusion : ndarray (n_classes, n_classes) or None
        The model's soft confusion matrix (crowdlab only).
    n_iter : int
        EM iterations run.
    shrinkage : float
        Prior strength used (chosen by empirical Bayes when ``shrinkage="auto"``).
    """

    posterior: np.ndarray
    confusion: np.ndarray
    prior: np.ndarray
    model_confusion: np.ndarray | None
    n_iter: int
    shrinkage: float = float("nan")


def _expected_counts(annotations: Annotations, posterior: np.ndarray, weights=None) -> np.ndarray:
    """(J, K, K) sum over each annotator's labels of posterior[item, c] at [j, c, label]."""
    k = annotations.n_classes
    j = annotations.n_annotators
    if weights is not None:
        posterior = posterior * weights[:, None]
    by_cell = annotations.cell_by_item @ posterior  # (J * K labels, K true classes)
    return by_cell.reshape(j, k, k).transpose(0, 2, 1)


#: Candidate prior strengths for ``shrinkage="auto"`` (pseudo-labels per confusion-matrix row).
SHRINKAGE_GRID = tuple(float(v) for v in np.round(np.logspace(0, 4, 17), 2))
#: Candidate reliabilities of each annotator: 0 = guesses uniformly, 1 = like the pooled matrix, 2 = never wrong
#: (between 0 and 1 the prior mean mixes uniform and pooled; between 1 and 2, pooled and the identity).
RELIABILITY_GRID = np.linspace(0.0, 2.0, 81)


def _reliability_means(pooled: np.ndarray, reliability: np.ndarray) -> np.ndarray:
    """(R, K, K) prior means for reliabilities ``reliability`` (see :data:`RELIABILITY_GRID`)."""
    k = pooled.shape[0]
    r = np.asarray(reliability, dtype=float)[:, None, None]
    low = r * pooled[None] + (1 - r) / k
    high = (2 - r) * pooled[None] + (r - 1) * np.eye(k)[None]
    return np.where(r <= 1, low, high)


def estimate_reliability(counts: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Per annotator, the reliability on :data:`RELIABILITY_GRID` maximising the likelihood of its (expected)
    confusion counts under the prior mean it implies (uniform guessing -> pooled matrix -> identity)."""
    candidates = np.log(np.clip(_reliability_means(pooled, RELIABILITY_GRID), 1e-6, None))
    scores = counts.reshape(len(counts), -1) @ candidates.reshape(len(candidates), -1).T
    return RELIABILITY_GRID[scores.argmax(axis=1)]


def choose_shrinkage(counts: np.ndarray, mean: np.ndarray) -> float:
    """Empirical-Bayes prior strength: the grid value maximising the Dirichlet-multinomial marginal likelihood
    of every annotator's (expected) confusion counts around its prior mean ``mean`` (J, K, K): how much
    annotators really differ from their reliability-scaled pooled matrix, learnt from the data."""
    from scipy.special import gammaln

    rows = counts.reshape(-1, counts.shape[-1])
    means = mean.reshape(-1, mean.shape[-1])
    totals = rows.sum(axis=1)
    best, best_value = SHRINKAGE_GRID[0], -np.inf
    for strength in SHRINKAGE_GRID:
        alpha = strength * means
        value = (gammaln(strength) - gammaln(strength + totals)).sum() + (gammaln(rows + alpha) - gammaln(alpha)).sum()
        if value > best_value:
            best, best_value = strength, value
    return best


def _m_step(annotations, posterior, *, shrinkage, probabilities, weights, choose=True):
    """Confusion matrices: each annotator's expected counts plus ``shrinkage`` pseudo-labels per row spread as
    ``r_j * pooled + (1 - r_j) / K`` (its reliability ``r_j`` times the pooled matrix, the rest uniform)."""
    k = annotations.n_classes
    counts = _expected_counts(annotations, posterior, weights)
    pooled = counts.sum(axis=0) + 1e-2
    pooled /= pooled.sum(axis=1, keepdims=True)
    reliability = estimate_reliability(counts, pooled)
    mean = np.clip(_reliability_means(pooled, reliability), 1e-6, None)
    mean /= mean.sum(axis=2, keepdims=True)
    if isinstance(shrinkage, str):
        shrinkage = choose_shrinkage(counts, mean)
    confusion = counts + shrinkage * mean
    confusion /= confusion.sum(axis=2, keepdims=True)
    item_weights = np.ones(len(posterior)) if weights is None else weights
    prior = (posterior * (item_weights * annotations.labelled)[:, None]).sum(axis=0) + 1.0
    prior /= prior.sum()
    model_confusion = None
    if probabilities is not None:
        model_confusion = (posterior * item_weights[:, None]).T @ probabilities + 1.0
        model_confusion /= model_confusion.sum(axis=1, keepdims=True)
    return confusion, prior, model_confusion, shrinkage


def _e_step(annotations, confusion, prior, probabilities, model_confusion):
    k = annotations.n_classes
    # row j * K + l: log P(annotator j says l | true class c) for every c
    log_likelihood = np.log(confusion).transpose(0, 2, 1).reshape(-1, k)
    log_posterior = annotations.item_by_cell @ log_likelihood
    log_posterior += np.log(prior)[None]
    if probabilities is not None:
        # The model as a soft annotator: its output distribution is scored against each true class's row.
        log_posterior += probabilities @ np.log(model_confusion).T
    log_posterior -= log_posterior.max(axis=1, keepdims=True)
    posterior = np.exp(log_posterior)
    posterior /= posterior.sum(axis=1, keepdims=True)
    return posterior


def estimate_dawid_skene(annotations: Annotations, *, probabilities=None, shrinkage: float | str = DEFAULT_SHRINKAGE,
                         max_iter: int = 200, tol: float = 1e-5, weights=None, start: np.ndarray | None = None
                         ) -> DawidSkeneFit:
    """Fit the Dawid-Skene model by EM (``probabilities`` given: the crowdlab variant).

    Parameters
    ----------
    annotations : Annotations
    probabilities : ndarray (n_items, n_classes), optional
        Model probabilities, used as one more (soft) annotator with its own estimated confusion matrix.
    shrinkage : float
        Dirichlet pseudo-labels per row pulling each annotator's confusion matrix to the pooled one.
    max_iter, tol : int, float
        EM stops when no posterior entry moves by more than ``tol`` or after ``max_iter`` iterations.
    weights : ndarray (n_items,), optional
        Image weights (bootstrap replicates).
    start : ndarray (n_items, n_classes), optional
        Initial posterior (default: vote shares, times the model's probabilities when given).
    """
    if start is None:
        votes = compute_vote_counts(annotations.item, annotations.label, n_items=annotations.n_items,
                                    n_classes=annotations.n_classes)
        start = votes + 1e-3
        if probabilities is not None:
            start = start * (np.asarray(probabilities) + 1e-3)
        start = start / start.sum(axis=1, keepdims=True)
    posterior = start
    n_iter = 0
    used = shrinkage
    for n_iter in range(1, max_iter + 1):
        # "auto": the prior strength is re-chosen at iterations 1, 4, 16, 64, ... (it settles fast)
        choose = shrinkage if n_iter in (1, 4, 16, 64, 256) else used
        confusion, prior, model_confusion, used = _m_step(annotations, posterior, shrinkage=choose,
                                                          probabilities=probabilities, weights=weights)
        updated = _e_step(annotations, confusion, prior, probabilities, model_confusion)
        change = np.abs(updated - posterior).max() if len(updated) else 0.0
        posterior = updated
        if change < tol:
            break
    confusion, prior, model_confusion, used = _m_step(annotations, posterior, shrinkage=used,
                                                      probabilities=probabilities, weights=weights)
    return DawidSkeneFit(posterior=posterior, confusion=confusion, prior=prior, model_confusion=model_confusion,
                         n_iter=n_iter, shrinkage=float(used))


def resolve_method(method: str, *, has_probabilities: bool) -> str:
    """The method ``auto`` stands for (``crowdlab`` with probabilities, else ``dawid_skene``); checks names."""
    if method not in METHODS:
        raise ValueError(ERROR_METHOD.format(value=method))
    if method == "crowdlab" and not has_probabilities:
        raise ValueError(ERROR_CROWDLAB_NEEDS_PROBABILITIES)
    if method == "auto":
        return "crowdlab" if has_probabilities else "dawid_skene"
    return method


@dataclass(frozen=True)
class Consensus:
    """Consensus labels of one method.

    Attributes
    ----------
    method : str
        ``majority``, ``dawid_skene`` or ``crowdlab``.
    label : ndarray of int64
        Consensus class per image (-1 = no annotation).
    score : ndarray of float
        Probability that the consensus is right: the model's posterior of the consensus class (majority: the
        Dawid-Skene posterior of the majority class, so the score means the same for every method). NaN
        without annotation.
    tie : ndarray of bool
        Top classes tied (majority: by votes; model-based: posterior equal within 1e-9); how the tie was
        resolved is in ``tie_rule``.
    tie_rule : str
    posterior : ndarray (n_items, n_classes)
    fit : DawidSkeneFit
    """

    method: str
    label: np.ndarray
    score: np.ndarray
    tie: np.ndarray
    tie_rule: str
    posterior: np.ndarray
    fit: DawidSkeneFit


def estimate_consensus(annotations: Annotations, *, method: str = "auto", probabilities=None, seed: int = 0,
                       shrinkage: float | str = DEFAULT_SHRINKAGE) -> Consensus:
    """Consensus label, its probability of being right and ties, for every image (see module docstring)."""
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=float)
        if probabilities.shape != (annotations.n_items, annotations.n_classes):
            raise ValueError(ERROR_PROBABILITIES_SHAPE.format(n=annotations.n_items, k=annotations.n_classes,
                                                              shape=probabilities.shape))
    method = resolve_method(method, has_probabilities=probabilities is not None)
    labelled = np.bincount(annotations.item, minlength=annotations.n_items) > 0
    fit = estimate_dawid_skene(annotations, probabilities=probabilities if method == "crowdlab" else None,
                               shrinkage=shrinkage)
    posterior = fit.posterior
    if method == "majority":
        votes = compute_vote_counts(annotations.item, annotations.label, n_items=annotations.n_items,
                                    n_classes=annotations.n_classes)
        label, tie = estimate_majority_vote(votes, probabilities=probabilities, seed=seed)
        tie_rule = ("tied classes: the one with the highest model probability" if probabilities is not None
                    else f"tied classes: a uniformly random one (seed {seed})")
    else:
        top = posterior.max(axis=1, keepdims=True)
        tied = posterior >= top - 1e-9
        tie = (tied.sum(axis=1) > 1) & labelled
        label = posterior.argmax(axis=1)  # first (lowest-index) of tied classes
        tie_rule = "tied posteriors: the class listed first in `classes`"
    label = np.where(labelled, label, -1).astype(np.int64)
    score = np.where(labelled, posterior[np.arange(len(label)), np.maximum(label, 0)], np.nan)
    return Consensus(method=method, label=label, score=score, tie=tie, tie_rule=tie_rule, posterior=posterior,
                     fit=fit)


# --------------------------------------------------------------------------------------------------------------
# per image agreement
# --------------------------------------------------------------------------------------------------------------
def compute_annotation_agreement(annotations: Annotations, consensus_label: np.ndarray) -> np.ndarray:
    """Share of an image's labels equal to its consensus label (NaN without annotation)."""
    n = np.bincount(annotations.item, minlength=annotations.n_items).astype(float)
    agree = np.bincount(annotations.item, weights=(annotations.label == consensus_label[annotations.item]),
                        minlength=annotations.n_items)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, agree / np.where(n > 0, n, 1), np.nan)


# --------------------------------------------------------------------------------------------------------------
# Krippendorff's alpha (nominal)
# --------------------------------------------------------------------------------------------------------------
def _alpha_parts(votes: np.ndarray):
    """Per image: pairable count m, disagreement D_u = (m^2 - sum_c V^2) / (m - 1), class counts (pairable only)."""
    m = votes.sum(axis=1)
    pairable = m >= 2
    v = np.where(pairable[:, None], votes, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        disagreement = np.where(pairable, (m ** 2 - (votes ** 2).sum(axis=1)) / np.where(pairable, m - 1, 1), 0.0)
    return pairable, disagreement, v


def _alpha_from_sums(disagreement_sum, class_totals):
    """alpha = 1 - (n - 1) * sum_u D_u / (n^2 - sum_c n_c^2) for arrays of replicates (last axis = classes)."""
    n = class_totals.sum(axis=-1)
    expected = n ** 2 - (class_totals ** 2).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = 1.0 - (n - 1) * disagreement_sum / expected
    return np.where(expected > 0, alpha, np.nan)


def compute_krippendorff_alpha(votes: np.ndarray) -> float:
    """Krippendorff's alpha for nominal data from per-image vote counts (images with < 2 labels ignored).

    NaN when no two labels can be compared or every label is the same class (no expected disagreement).
    """
    pairable, disagreement, v = _alpha_parts(np.asarray(votes, dtype=float))
    return float(_alpha_from_sums(disagreement.sum(), v.sum(axis=0)))


def bootstrap_alpha(votes: np.ndarray, subsets: dict, *, n_bootstrap: int, seed: int, confidence_level: float,
                    recode_class: dict | None = None) -> dict:
    """Krippendorff's alpha with a percentile interval (Poisson bootstrap of images) for many subsets at once.

    Images sharing a vote pattern and subset memberships are interchangeable, so the bootstrap draws a
    Poisson(count) weight per such *cell* (the same as Poisson(1) per image) and all subsets and replicates
    come from one draw.

    Parameters
    ----------
    votes : ndarray (n_items, n_classes)
    subsets : dict name -> bool mask (n_items,)
        Each subset is compared with its complement ("the rest"): ``p_value`` is the one-sided bootstrap
        p-value that the subset's alpha is lower than the rest's, ``(1 + #{replicates: subset >= rest}) /
        (1 + #replicates)``.
    recode_class : dict name -> class index, optional
        Subsets whose alpha is computed on the class-vs-rest recoding of the labels (per-class agreement).

    Returns
    -------
    dict name -> dict(value, ci_low, ci_high, n, p_value, rest_value)
    """
    votes = np.asarray(votes, dtype=float)
    recode_class = recode_class or {}
    m = votes.sum(axis=1)
    pairable = m >= 2
    names = list(subsets)
    masks = np.array([np.asarray(subsets[name], dtype=bool) for name in names]).reshape(len(names), -1)
    key = np.concatenate([votes, masks.T.astype(float)], axis=1)[pairable]
    cells, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    cell_votes = cells[:, :votes.shape[1]]
    cell_masks = cells[:, votes.shape[1]:].T.astype(bool)  # (S, C)
    cell_m = cell_votes.sum(axis=1)

    def parts(name):
        if name in recode_class:
            c = recode_class[name]
            v = np.stack([cell_votes[:, c], cell_m - cell_votes[:, c]], axis=1)
        else:
            v = cell_votes
        d = (cell_m ** 2 - (v ** 2).sum(axis=1)) / (cell_m - 1)
        return d, v

    rng = np.random.default_rng(seed)
    weights = rng.poisson(np.broadcast_to(counts.astype(float), (n_bootstrap, len(counts)))).astype(float)
    tail = (1 - confidence_level) / 2
    out = {}
    for s, name in enumerate(names):
        d, v = parts(name)
        inside = cell_masks[s]
        if name in recode_class:
            inside = np.ones_like(inside)
        d_in, v_in = d * inside, v * inside[:, None]
        d_out, v_out = d * ~inside, v * (~inside)[:, None]
        value = _alpha_from_sums(counts @ d_in, counts @ v_in)
        rest_value = _alpha_from_sums(counts @ d_out, counts @ v_out)
        boot = _alpha_from_sums(weights @ d_in, weights @ v_in)
        finite = boot[np.isfinite(boot)]
        low, high = (np.quantile(finite, [tail, 1 - tail]) if len(finite) >= 10 else (np.nan, np.nan))
        p_value = np.nan
        if name not in recode_class and np.isfinite(value) and np.isfinite(rest_value):
            difference = boot - _alpha_from_sums(weights @ d_out, weights @ v_out)
            ok = np.isfinite(difference)
            if ok.sum() >= 10:
                p_value = float((1 + np.sum(difference[ok] >= 0)) / (1 + ok.sum()))
        out[name] = {"value": float(value), "ci_low": float(low), "ci_high": float(high),
                     "n": int((counts * inside).sum()), "p_value": p_value, "rest_value": float(rest_value)}
    return out


# --------------------------------------------------------------------------------------------------------------
# per annotator
# --------------------------------------------------------------------------------------------------------------
def _co_agreement(annotations: Annotations, votes: np.ndarray):
    """Per annotation: share of the image's other labels equal to this one, and that share's mean and
    variance if the annotator had given a uniformly random member of the image's label multiset (NaN where
    the image has a single label)."""
    m = votes.sum(axis=1)
    mi = m[annotations.item]
    same = votes[annotations.item, annotations.label]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(mi >= 2, (same - 1) / (mi - 1), np.nan)
        # Under the null the annotator's label is class c with probability V_c / m, and then share is
        # (V_c - 1) / (m - 1).
        first = ((votes * (votes - 1)).sum(axis=1) / (m * (m - 1)))
        second = ((votes * (votes - 1) ** 2).sum(axis=1) / (m * (m - 1) ** 2))
    mean = np.where(mi >= 2, first[annotations.item], np.nan)
    variance = np.where(mi >= 2, second[annotations.item] - first[annotations.item] ** 2, np.nan)
    return share, mean, np.maximum(variance, 0.0)


def _beta_interval(mean, variance, confidence_level):
    """Quantiles of the Beta distribution with the given mean and variance (moment matching)."""
    mean = np.clip(np.asarray(mean, dtype=float), 1e-9, 1 - 1e-9)
    variance = np.asarray(variance, dtype=float)
    limit = mean * (1 - mean)
    variance = np.clip(variance, 1e-12, limit * 0.999)
    common = limit / variance - 1
    a = mean * common
    b = (1 - mean) * common
    tail = (1 - confidence_level) / 2
    return stats.beta.ppf(tail, a, b), stats.beta.ppf(1 - tail, a, b)


@dataclass(frozen=True)
class AnnotatorResult:
    """Per-annotator table and its settings.

    Attributes
    ----------
    table : dict of arrays (one entry per annotator, in ``Annotations.annotators`` order)
        ``annotator``, ``n`` (labels given), ``n_shared`` (labels on images someone else labelled too),
        ``accuracy``, ``ci_low``, ``ci_high`` (see module docstring), ``agreement`` (mean share of
        co-annotators agreeing), ``expected_agreement`` (its mean for an annotator exchangeable with the
        others on the same images), ``agreement_gap`` (difference), ``p_value``, ``p_adjusted`` (Holm),
        ``verdict``, ``median_seconds``.
    confusion : ndarray (n_annotators, n_classes, n_classes)
        Expected counts: ``[j, c, l]`` = sum over j's labels l of the posterior probability that the true class
        is c.
    """

    table: dict
    confusion: np.ndarray
    settings: dict = field(default_factory=dict)


def estimate_annotator_accuracy(annotations: Annotations, posterior: np.ndarray, *,
                                confidence_level: float = 0.95):
    """Accuracy of each annotator with its interval.

    ``accuracy`` is the mean over the annotator's labels of ``p``, the posterior probability that the label is
    the image's true class (so a label that disagrees with the others on an ambiguous image costs less than
    on a clear one). Its variance is that of the mean of Bernoulli(``p``) draws over a resample of the
    annotator's images: ``(var(p) + mean(p (1 - p))) / n`` (law of total variance; the first term is what a
    bootstrap of images gives, the second the labels' own randomness). The interval is the central
    ``confidence_level`` part of the Beta distribution with that mean and variance. A Poisson bootstrap with
    the model re-fitted on each replicate gave the same widths on CIFAR-10N (docs/methods.md), so the refit
    is not repeated here.

    Returns
    -------
    accuracy, ci_low, ci_high : ndarray (n_annotators,)
    """
    j_count = annotations.n_annotators
    n = np.bincount(annotations.annotator, minlength=j_count).astype(float)
    p = posterior[annotations.item, annotations.label]
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(annotations.annotator, weights=p, minlength=j_count) / n
        second = np.bincount(annotations.annotator, weights=p * p, minlength=j_count) / n
        spread = np.maximum(second - accuracy ** 2, 0.0)
        own = np.bincount(annotations.annotator, weights=p * (1 - p), minlength=j_count) / n
        variance = (spread * n / np.maximum(n - 1, 1) + own) / n
    low, high = _beta_interval(np.nan_to_num(accuracy, nan=0.5), np.nan_to_num(variance, nan=0.25),
                               confidence_level)
    low = np.where(n > 0, np.minimum(low, accuracy), np.nan)
    high = np.where(n > 0, np.maximum(high, accuracy), np.nan)
    return accuracy, low, high


def find_careless_annotators(annotations: Annotations, *, votes=None, alpha: float = 0.05,
                             min_labels: int = DEFAULT_MIN_LABELS, correction: str = "holm"):
    """Exchangeability test per annotator (see module docstring).

    Returns
    -------
    dict of arrays: ``n_shared``, ``agreement``, ``expected_agreement``, ``agreement_gap``, ``p_value``,
    ``p_adjusted``, ``verdict``.
    """
    j_count = annotations.n_annotators
    if votes is None:
        votes = compute_vote_counts(annotations.item, annotations.label, n_items=annotations.n_items,
                                    n_classes=annotations.n_classes)
    share, mean, variance = _co_agreement(annotations, votes)
    ok = np.isfinite(share)
    a = annotations.annotator[ok]
    n_shared = np.bincount(a, minlength=j_count)
    observed = np.bincount(a, weights=share[ok], minlength=j_count)
    expected = np.bincount(a, weights=mean[ok], minlength=j_count)
    var = np.bincount(a, weights=variance[ok], minlength=j_count)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (observed - expected) / np.sqrt(var)
        p_value = np.where(var > 0, stats.norm.cdf(z), np.where(n_shared > 0, 1.0, np.nan))
        agreement = np.where(n_shared > 0, observed / np.maximum(n_shared, 1), np.nan)
        expected_agreement = np.where(n_shared > 0, expected / np.maximum(n_shared, 1), np.nan)
    enough = n_shared >= min_labels
    tested = np.where(enough, p_value, np.nan)
    adjusted = adjust_p_values(tested, method=correction)
    verdict = np.where(~enough, VERDICT_INSUFFICIENT,
                       np.where(adjusted < alpha, VERDICT_WORSE, VERDICT_NO_GAP)).astype(object)
    return {"n_shared": n_shared, "agreement": agreement, "expected_agreement": expected_agreement,
            "agreement_gap": agreement - expected_agreement, "p_value": tested, "p_adjusted": adjusted,
            "verdict": verdict}


def estimate_annotators(annotations: Annotations, consensus: Consensus, *, confidence_level: float = 0.95,
                        min_labels: int = DEFAULT_MIN_LABELS, correction: str = "holm") -> AnnotatorResult:
    """Per-annotator accuracy, interval, verdict, confusion and median seconds (see :class:`AnnotatorResult`)."""
    j_count = annotations.n_annotators
    accuracy, low, high = estimate_annotator_accuracy(annotations, consensus.posterior,
                                                      confidence_level=confidence_level)
    test = find_careless_annotators(annotations, alpha=1 - confidence_level, min_labels=min_labels,
                                    correction=correction)
    median_seconds = np.full(j_count, np.nan)
    if annotations.seconds is not None:
        seconds = np.asarray(annotations.seconds, dtype=float)
        known = np.isfinite(seconds)
        order = np.lexsort((seconds[known], annotations.annotator[known]))
        a = annotations.annotator[known][order]
        s = seconds[known][order]
        starts = np.searchsorted(a, np.arange(j_count), side="left")
        stops = np.searchsorted(a, np.arange(j_count), side="right")
        has = stops > starts
        lower = s[np.clip((starts + stops - 1) // 2, 0, max(len(s) - 1, 0))] if len(s) else np.zeros(j_count)
        upper = s[np.clip((starts + stops) // 2, 0, max(len(s) - 1, 0))] if len(s) else np.zeros(j_count)
        median_seconds = np.where(has, (lower + upper) / 2, np.nan)
    confusion = _expected_counts(annotations, consensus.fit.posterior)
    table = {"annotator": np.array(annotations.annotators, dtype=object),
             "n": np.bincount(annotations.annotator, minlength=j_count),
             "accuracy": accuracy, "ci_low": low, "ci_high": high, **test, "median_seconds": median_seconds}
    settings = {"confidence_level": confidence_level, "min_labels": min_labels, "correction": correction,
                "consensus_method": consensus.method, "shrinkage": consensus.fit.shrinkage}
    return AnnotatorResult(table=table, confusion=confusion, settings=settings)


# --------------------------------------------------------------------------------------------------------------
# per annotator x group
# --------------------------------------------------------------------------------------------------------------
def compute_annotator_group_agreement(annotations: Annotations, votes: np.ndarray, group: np.ndarray, *,
                                      confidence_level: float = 0.95):
    """For each (annotator, group value): pairwise alpha of the annotator against co-annotators on the
    group's images, ``1 - D_o / D_e``, with ``D_o`` the share of (annotator, co-annotator) label pairs that
    differ and ``D_e`` the group's expected disagreement (from its label totals, as in alpha), a normal
    interval for ``D_o``, and the one-sided exchangeability p-value (lower agreement than an annotator
    exchangeable with the others on the same images).

    Returns
    -------
    DataFrame with columns annotator, group, n, value, ci_low, ci_high, p_value (rows with n >= 1).
    """
    share, mean, variance = _co_agreement(annotations, votes)
    ok = np.isfinite(share)
    group = np.asarray(group, dtype=object)
    values, group_codes = np.unique(group.astype(str), return_inverse=True)
    g_item = group_codes[annotations.item]
    g_count = len(values)
    # expected disagreement of each group from its pairable label totals
    m = votes.sum(axis=1)
    pairable = m >= 2
    totals = np.zeros((g_count, votes.shape[1]))
    np.add.at(totals, group_codes[pairable], votes[pairable])
    n_g = totals.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected_disagreement = 1 - ((totals * (totals - 1)).sum(axis=1)) / (n_g * (n_g - 1))
    cell = annotations.annotator[ok] * g_count + g_item[ok]
    size = annotations.n_annotators * g_count
    n = np.bincount(cell, minlength=size)
    disagree = 1 - share[ok]
    sum_d = np.bincount(cell, weights=disagree, minlength=size)
    sum_d2 = np.bincount(cell, weights=disagree ** 2, minlength=size)
    observed = np.bincount(cell, weights=share[ok], minlength=size)
    expected = np.bincount(cell, weights=mean[ok], minlength=size)
    var = np.bincount(cell, weights=variance[ok], minlength=size)
    z_value = stats.norm.ppf(0.5 + confidence_level / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        d_o = sum_d / n
        se = np.sqrt(np.maximum(sum_d2 / n - d_o ** 2, 0) / np.maximum(n - 1, 1))
        d_e = np.tile(expected_disagreement, annotations.n_annotators)
        value = 1 - d_o / d_e
        low = 1 - (d_o + z_value * se) / d_e
        high = 1 - np.maximum(d_o - z_value * se, 0) / d_e
        p_value = np.where(var > 0, stats.norm.cdf((observed - expected) / np.sqrt(var)), 1.0)
    present = np.flatnonzero(n > 0)
    import pandas as pd

    return pd.DataFrame({"annotator": np.array(annotations.annotators, dtype=object)[present // g_count],
                         "group": values[present % g_count].astype(object), "n": n[present],
                         "value": value[present], "ci_low": low[present], "ci_high": high[present],
                         "p_value": p_value[present]})


# --------------------------------------------------------------------------------------------------------------
# the whole analysis
# --------------------------------------------------------------------------------------------------------------
#: Flag an image when its labels disagree and the consensus is less likely right than this.
DEFAULT_ISSUE_THRESHOLD = 0.5
METRIC = "annotation_agreement"
ANNOTATOR_ATTRIBUTE = "annotator"


@dataclass(frozen=True)
class AnnotationAudit:
    """Everything the annotation analysis computed.

    Attributes
    ----------
    per_image : DataFrame
        One row per image (``images.parquet`` order): ``n_annotations``, ``consensus_label`` (class name,
        None without annotation), ``consensus_score`` (probability the consensus is right),
        ``annotation_agreement`` (share of the image's labels equal to the consensus),
        ``is_annotation_disagreement_issue`` (labels disagree and ``consensus_score`` <
        ``issue_threshold``), ``annotation_disagreement_score`` (= ``consensus_score``, 1 without
        annotation; lower = worse), ``consensus_tie``.
    annotators : DataFrame
        ``annotators.parquet``: ``annotator, n, accuracy, ci_low, ci_high, verdict`` then ``n_shared``,
        ``agreement``, ``expected_agreement``, ``agreement_gap``, ``p_value``, ``p_adjusted``,
        ``median_seconds``, ``recall:<class>`` (estimated P(label c | true class c)) and ``confusion``
        (JSON: expected counts, true class -> given label -> count).
    group_metrics : DataFrame
        Rows of metric ``annotation_agreement`` (contract columns plus ``p_value``, ``test``).
    section : dict
        ``audit.json`` ``analyses.annotations``.
    findings : list of dict
        ``{"severity", "text", "weight"}`` (severity ``high|medium|low|info``); also in ``section["findings"]``.
    """

    per_image: object
    annotators: object
    group_metrics: object
    section: dict
    findings: list


def compute_annotation_audit(annotations: Annotations, *, classes, groups=None, probabilities=None,
                             method: str = "auto", confidence_level: float = 0.95, n_bootstrap: int = 1000,
                             seed: int = 0, min_group_size: int = 30, max_ci_width: float = 0.3,
                             correction: str = "holm", min_labels: int = DEFAULT_MIN_LABELS,
                             issue_threshold: float = DEFAULT_ISSUE_THRESHOLD,
                             compare_methods: bool = True) -> AnnotationAudit:
    """Consensus, per-image agreement, per-annotator reliability and agreement by class and group.

    Parameters
    ----------
    annotations : Annotations
    classes : sequence of str
    groups : DataFrame, optional
        One column per group attribute (string labels, ``images.parquet`` order).
    probabilities : ndarray (n_items, n_classes), optional
        Model probabilities (crowdlab, and majority-vote tie breaks).
    method : {"auto", "majority", "dawid_skene", "crowdlab"}
    confidence_level, n_bootstrap, seed, min_group_size, max_ci_width, correction
        As for every other analysis. ``correction`` controls the family of per-group tests here; the
        annotator verdicts are always Holm (family-wise) over annotators.
    min_labels : int
        Annotators with fewer labels on shared images get ``insufficient_data``.
    compare_methods : bool
        Also fit the other methods and record how often their consensus differs (section ``methods``).
    """
    import json

    import pandas as pd

    classes = [str(c) for c in classes]
    k = len(classes)
    votes = compute_vote_counts(annotations.item, annotations.label, n_items=annotations.n_items, n_classes=k)
    consensus = estimate_consensus(annotations, method=method, probabilities=probabilities, seed=seed)
    labelled = annotations.labelled
    n_annotations = votes.sum(axis=1).astype(np.int64)
    agreement = compute_annotation_agreement(annotations, consensus.label)
    unanimous = votes.max(axis=1) == n_annotations
    flagged = labelled & ~unanimous & (consensus.score < issue_threshold)
    names = np.array(classes + [None], dtype=object)
    per_image = pd.DataFrame({
        "n_annotations": n_annotations,
        "consensus_label": names[consensus.label],
        "consensus_score": consensus.score,
        "annotation_agreement": agreement,
        "is_annotation_disagreement_issue": flagged,
        "annotation_disagreement_score": np.where(labelled, consensus.score, 1.0),
        "consensus_tie": consensus.tie,
    })

    # -- annotators ------------------------------------------------------------------------------------------
    result = estimate_annotators(annotations, consensus, confidence_level=confidence_level, min_labels=min_labels)
    table = dict(result.table)
    confusion = result.confusion
    row_totals = confusion.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        # NaN where the annotator labelled (in expectation) less than half an image of the class
        recall = np.where(row_totals >= 0.5, np.diagonal(confusion, axis1=1, axis2=2) / row_totals, np.nan)
    annotators = pd.DataFrame(table)
    first = ["annotator", "n", "accuracy", "ci_low", "ci_high", "verdict"]
    annotators = annotators[first + [c for c in annotators.columns if c not in first]]
    for c, name in enumerate(classes):
        annotators[f"recall:{name}"] = recall[:, c]
    annotators["confusion"] = [
        json.dumps({classes[t]: {classes[g]: round(float(confusion[j, t, g]), 3) for g in range(k)
                                 if confusion[j, t, g] >= 0.005}
                    for t in range(k) if row_totals[j, t] >= 0.005}, sort_keys=True)
        for j in range(annotations.n_annotators)]
    annotators["verdict"] = annotators["verdict"].astype(str)

    # -- agreement (Krippendorff's alpha) ----------------------------------------------------------------------
    subsets = {("all", "all", ""): np.ones(annotations.n_items, dtype=bool)}
    recode = {}
    for c, name in enumerate(classes):
        subsets[("all", "all", name)] = np.ones(annotations.n_items, dtype=bool)
        recode[("all", "all", name)] = c
    group_columns = list(groups.columns) if groups is not None else []
    for attribute in group_columns:
        labels = np.asarray(groups[attribute].astype(str).to_numpy(), dtype=object)
        for value in sorted(set(labels)):
            subsets[(attribute, value, "")] = labels == value
    boot = bootstrap_alpha(votes, subsets, n_bootstrap=n_bootstrap, seed=seed, confidence_level=confidence_level,
                           recode_class=recode)
    rows = []
    for (attribute, group, class_name), entry in boot.items():
        rows.append({"attribute": attribute, "group": group, "class": class_name, "n": entry["n"],
                     "metric": METRIC, "value": entry["value"], "ci_low": entry["ci_low"],
                     "ci_high": entry["ci_high"], "p_value": entry["p_value"] if attribute != "all" else np.nan,
                     "test": "bootstrap: alpha of the group lower than the rest's" if attribute != "all" else ""})
    if group_columns:
        # per annotator x group for metadata attributes (pixel groups such as image_brightness_group are
        # compared as groups above, but an annotator x brightness table would mostly test chance)
        for attribute in [a for a in group_columns if not str(a).startswith("image_")]:
            frame = compute_annotator_group_agreement(annotations, votes, groups[attribute].astype(str).to_numpy(),
                                                      confidence_level=confidence_level)
            for record in frame.itertuples(index=False):
                rows.append({"attribute": f"{ANNOTATOR_ATTRIBUTE} & {attribute}",
                             "group": f"{record.annotator} & {record.group}", "class": "", "n": int(record.n),
                             "metric": METRIC, "value": float(record.value), "ci_low": float(record.ci_low),
                             "ci_high": float(record.ci_high), "p_value": float(record.p_value),
                             "test": "exchangeability: agrees with co-annotators less than chance on these images"})
    group_metrics = pd.DataFrame(rows)
    with np.errstate(invalid="ignore"):
        width = group_metrics["ci_high"] - group_metrics["ci_low"]
    insufficient = (group_metrics["n"] < min_group_size) | ~(width <= max_ci_width)
    group_metrics["insufficient_evidence"] = insufficient.to_numpy(dtype=bool)
    tested = group_metrics["p_value"].notna() & ~group_metrics["insufficient_evidence"]
    adjusted = adjust_p_values(np.where(tested, group_metrics["p_value"], np.nan), method=correction)
    alpha = 1 - confidence_level
    verdict = np.where(group_metrics["insufficient_evidence"], VERDICT_INSUFFICIENT,
                       np.where(~tested, "", np.where(adjusted < alpha, VERDICT_WORSE, VERDICT_NO_GAP)))
    verdict = np.where((group_metrics["attribute"] == "all") & ~group_metrics["insufficient_evidence"], "", verdict)
    group_metrics["verdict"] = verdict.astype(object)
    group_metrics["p_adjusted"] = adjusted

    # -- section and findings ------------------------------------------------------------------------------------
    overall = boot[("all", "all", "")]
    verdicts = annotators["verdict"].value_counts().to_dict()
    n_tested = int(verdicts.get(VERDICT_WORSE, 0) + verdicts.get(VERDICT_NO_GAP, 0))
    spread = None
    tested_rows = annotators[annotators["verdict"] != VERDICT_INSUFFICIENT]
    if len(tested_rows):
        spread = {"accuracy_p05": float(np.nanquantile(tested_rows["accuracy"], 0.05)),
                  "accuracy_p95": float(np.nanquantile(tested_rows["accuracy"], 0.95)),
                  "median_ci_width": float(np.nanmedian(tested_rows["ci_high"] - tested_rows["ci_low"]))}
    methods = {}
    if compare_methods:
        candidates = ["majority", "dawid_skene"] + (["crowdlab"] if probabilities is not None else [])
        for other in candidates:
            if other == consensus.method:
                other_label = consensus.label
            elif other == "majority":
                other_label, _ = estimate_majority_vote(votes, probabilities=probabilities, seed=seed)
            else:
                other_label = estimate_consensus(annotations, method=other, probabilities=probabilities,
                                                 seed=seed).label
            methods[other] = {"share_differing_from_used": float(np.mean(other_label[labelled]
                                                                         != consensus.label[labelled]))
                              if labelled.any() else 0.0}
    section = {
        "method": consensus.method,
        "method_requested": method,
        "tie_rule": consensus.tie_rule,
        "n_ties": int(consensus.tie.sum()),
        "n_annotations": int(len(annotations.item)),
        "n_annotators": int(annotations.n_annotators),
        "n_images_annotated": int(labelled.sum()),
        "n_images_without_annotation": int((~labelled).sum()),
        "annotations_per_image": {"min": int(n_annotations[labelled].min()) if labelled.any() else 0,
                                  "median": float(np.median(n_annotations[labelled])) if labelled.any() else 0.0,
                                  "max": int(n_annotations.max()) if len(n_annotations) else 0},
        "n_disagreement_issues": int(flagged.sum()),
        "issue_threshold": issue_threshold,
        "krippendorff_alpha": {"value": overall["value"], "ci_low": overall["ci_low"], "ci_high": overall["ci_high"],
                               "n": overall["n"], "confidence_level": confidence_level,
                               "n_bootstrap": n_bootstrap},
        "shrinkage": consensus.fit.shrinkage,
        "em_iterations": consensus.fit.n_iter,
        "annotator_verdicts": {str(key): int(value) for key, value in verdicts.items()},
        "annotators_tested": n_tested,
        "annotators_indistinguishable": bool(n_tested > 0 and verdicts.get(VERDICT_WORSE, 0) == 0),
        "annotator_accuracy_spread": spread,
        "methods": methods,
        "settings": {**result.settings, "min_group_size": min_group_size, "max_ci_width": max_ci_width,
                     "group_correction": correction},
    }
    findings = []
    n_worse = int(verdicts.get(VERDICT_WORSE, 0))
    alpha_text = (f"Krippendorff's alpha {overall['value']:.2f} ({overall['ci_low']:.2f}-{overall['ci_high']:.2f})"
                  if np.isfinite(overall["value"]) else "Krippendorff's alpha could not be computed")
    findings.append({"severity": "info", "weight": 1.0,
                     "text": f"Annotators: {alpha_text} over {overall['n']} images with two or more labels; "
                             f"consensus by {consensus.method.replace('_', '-')} ({consensus.tie.sum()} ties "
                             f"resolved), {int(flagged.sum())} image{'' if int(flagged.sum()) == 1 else 's'} with a doubtful "
                             "consensus."})
    if n_worse:
        worst = annotators[annotators["verdict"] == VERDICT_WORSE].sort_values("p_adjusted")
        shown = ", ".join(f"{r.annotator} (accuracy {r.accuracy:.2f}, {r.ci_low:.2f}-{r.ci_high:.2f})"
                          for r in worst.head(5).itertuples())
        findings.append({"severity": "medium", "weight": 2.0,
                         "text": f"{n_worse} of {n_tested} annotators agree with co-annotators of the same images "
                                 f"less than chance allows (Holm over annotators): {shown}"
                                 + (", ..." if n_worse > 5 else "") + "."})
    elif n_tested:
        findings.append({"severity": "info", "weight": 1.0,
                         "text": f"The {n_tested} annotators with enough shared labels are indistinguishable: none "
                                 f"agrees with co-annotators of the same images less than chance allows (Holm over "
                                 f"annotators); differences in their apparent accuracy are within chance and image "
                                 f"difficulty, so they are not ranked."})
    worse_groups = group_metrics[(group_metrics["verdict"] == VERDICT_WORSE)
                                 & ~group_metrics["attribute"].str.startswith(f"{ANNOTATOR_ATTRIBUTE} & ")]
    for record in worse_groups.head(5).itertuples():
        findings.append({"severity": "medium", "weight": 1.5,
                         "text": f"Annotators agree less on {record.attribute} = {record.group}: alpha "
                                 f"{record.value:.2f} ({record.ci_low:.2f}-{record.ci_high:.2f})."})
    section["findings"] = findings
    section["annotators"] = [
        {"annotator": str(r.annotator), "n": int(r.n), "accuracy": float(r.accuracy), "ci_low": float(r.ci_low),
         "ci_high": float(r.ci_high), "verdict": str(r.verdict)}
        for r in annotators[["annotator", "n", "accuracy", "ci_low", "ci_high", "verdict"]].itertuples(index=False)]
    return AnnotationAudit(per_image=per_image, annotators=annotators, group_metrics=group_metrics,
                           section=section, findings=findings)
