"""Out-of-sample class probabilities from embeddings: a K-fold logistic-regression probe.

Confident learning needs probabilities from a model that did not see the image's label. When the
audited model was trained on the audited data, its own probabilities are over-confident on exactly the
wrong labels it memorised; a linear probe fitted on the model's embeddings with K-fold cross-fitting
gives every image probabilities from a probe that never saw it.

Two fitting methods, both multinomial (softmax) logistic regression on standardised embeddings:

* ``"lbfgs"`` -- scikit-learn's ``LogisticRegression`` per fold, in memory (small N);
* ``"sgd"`` -- mini-batch gradient descent (Adam) over chunks of embeddings, all folds updated in the
  same pass, so N is bounded only by disk: memory is one chunk plus ``n_folds`` weight matrices.

Both are deterministic for a given ``seed``. Folds are stratified by label.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from audit.analysis._jobs import ERROR_N_JOBS, check_n_jobs, n_workers  # noqa: F401 - ERROR_N_JOBS re-exported
from audit.errors import InputError

ERROR_N_CLASSES = "n_classes must be an integer of at least 2, got {value!r}"
ERROR_N_FOLDS = "n_folds must be an integer of at least 2, got {value!r}"
ERROR_LABELS = "labels must be a 1-D array of class indices in 0..{max_index}; row {row} has {value!r}"
ERROR_EMBEDDINGS_SHAPE = "embeddings: chunk {chunk} has shape {shape}; expected 2-D chunks with {n_features} columns"
ERROR_EMBEDDINGS_ROWS = "embeddings have {found} rows but labels have {expected}; both must list the same images in the same order"
ERROR_EMBEDDINGS_NOT_FINITE = "embeddings: row {row} contains NaN or infinite values; re-run inference for that image or leave it out"
ERROR_EMBEDDINGS_TYPE = ("embeddings must be a 2-D numpy array or a callable returning an iterator of 2-D chunks, "
                         "got {kind}")
ERROR_METHOD = "method must be 'auto', 'lbfgs' or 'sgd', got {value!r}"
#: ``"sgd"`` folds go to worker processes (``n_jobs``) only from this much work (images x classes x embedding
#: width; 100,000 x 1,000 x 64 is 6.4e9): below it, starting the workers costs more than it saves.
PARALLEL_MIN_WORK = 1_000_000_000
ERROR_TOO_FEW_IMAGES = "the probe needs at least n_folds = {n_folds} images, got {n}"

METHODS = ("auto", "lbfgs", "sgd")


@dataclass(frozen=True, eq=False)
class KFoldProbe:
    """A fitted K-fold probe: one linear softmax model per fold.

    Attributes
    ----------
    n_classes, n_folds : int
    method : str
        ``"lbfgs"`` or ``"sgd"``.
    seed : int
    fold : ndarray (N,) of int
        The fold of each image; image ``i`` is predicted by the model trained without fold ``fold[i]``.
    mean, scale : ndarray (D,)
        Standardisation applied to embeddings before the linear models (over all images; no labels used).
    weights : ndarray (n_folds, D, K) float32
    bias : ndarray (n_folds, K) float32
        ``probabilities = softmax(((x - mean) / scale) @ weights[f] + bias[f])``.
    """

    n_classes: int
    n_folds: int
    method: str
    seed: int
    fold: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def predict_chunk(self, chunk: np.ndarray, start: int) -> np.ndarray:
        """Out-of-sample probabilities (float32) of rows ``start .. start + len(chunk)``."""
        x = _standardise(chunk, self.mean, self.scale)
        folds = self.fold[start:start + x.shape[0]]
        result = np.empty((x.shape[0], self.n_classes), dtype=np.float32)
        with _one_blas_thread():  # the same numbers on every machine (see _one_blas_thread)
            for f in range(self.n_folds):
                rows = np.flatnonzero(folds == f)
                if rows.size:
                    result[rows] = _softmax(x[rows] @ self.weights[f] + self.bias[f])
        return result

    def probability_chunks(self, embeddings, *, chunk_rows: int | None = None) -> Callable[[], Iterator[np.ndarray]]:
        """A re-iterable chunk source of out-of-sample probabilities, for ``estimate_label_noise``."""
        source = _as_source(embeddings, chunk_rows)
        n = self.fold.shape[0]

        def iterate():
            for start, chunk in _iter_rows(source, n_rows=n, n_features=self.mean.shape[0]):
                yield self.predict_chunk(chunk, start)

        return iterate

    def predict_out_of_sample(self, embeddings, *, chunk_rows: int | None = None) -> np.ndarray:
        """All out-of-sample probabilities as one (N, K) float32 array."""
        return np.concatenate(list(self.probability_chunks(embeddings, chunk_rows=chunk_rows)()), axis=0)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits.astype(np.float32, copy=False)


def _standardise(chunk, mean, scale) -> np.ndarray:
    return ((np.asarray(chunk, dtype=np.float32) - mean) / scale).astype(np.float32, copy=False)


def _as_source(embeddings, chunk_rows):
    if callable(embeddings):
        return embeddings
    if isinstance(embeddings, np.ndarray):
        if embeddings.ndim != 2:
            raise InputError(ERROR_EMBEDDINGS_SHAPE.format(chunk=0, shape=embeddings.shape, n_features="D"))
        rows = chunk_rows or max(1, (1 << 22) // max(1, embeddings.shape[1]))
        return lambda: (embeddings[s:s + rows] for s in range(0, embeddings.shape[0], rows))
    raise InputError(ERROR_EMBEDDINGS_TYPE.format(kind=type(embeddings).__name__))


def _iter_rows(source, *, n_rows, n_features=None):
    start = 0
    for index, chunk in enumerate(source()):
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or (n_features is not None and chunk.shape[1] != n_features):
            raise InputError(ERROR_EMBEDDINGS_SHAPE.format(chunk=index, shape=chunk.shape,
                                                           n_features=n_features if n_features is not None else "D"))
        if n_features is None:
            n_features = chunk.shape[1]
        if start + chunk.shape[0] > n_rows:
            raise InputError(ERROR_EMBEDDINGS_ROWS.format(found=f"more than {n_rows}", expected=n_rows))
        if chunk.shape[0]:
            yield start, chunk
        start += chunk.shape[0]
    if start != n_rows:
        raise InputError(ERROR_EMBEDDINGS_ROWS.format(found=start, expected=n_rows))


def assign_folds(labels: np.ndarray, *, n_folds: int, seed: int) -> np.ndarray:
    """Stratified fold of every image: within each class, a seeded shuffle dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(labels.shape[0], dtype=np.int16)
    offset = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        # Rotate the starting fold per class so small classes do not all land in fold 0.
        fold[members] = (np.arange(members.size) + offset) % n_folds
        offset += members.size
    return fold


def fit_kfold_probe(embeddings, labels, *, n_classes: int, n_folds: int = 5, seed: int = 0, method: str = "auto",
                    max_lbfgs_rows: int = 50_000, c: float = 1.0, n_epochs: int = 10, batch_size: int = 256,
                    learning_rate: float = 1e-3, l2: float = 1e-4, chunk_rows: int | None = None,
                    n_jobs: int | None = None) -> KFoldProbe:
    """Fit one multinomial logistic regression per fold on standardised embeddings.

    Parameters
    ----------
    embeddings : ndarray (N, D) or callable
        Embeddings in image order, or a callable returning a fresh iterator of row chunks (read once for
        the standardisation and once per epoch with ``"sgd"``).
    labels : ndarray (N,) of int
        Given class indices.
    n_classes : int
    n_folds : int
        Number of folds (at least 2).
    seed : int
        Seeds the folds, the mini-batch order and the initial weights.
    method : {"auto", "lbfgs", "sgd"}
        ``"auto"`` uses ``"lbfgs"`` when ``N <= max_lbfgs_rows`` (embeddings then held in memory), else
        ``"sgd"``.
    c : float
        Inverse L2 strength for ``"lbfgs"`` (scikit-learn's ``C``).
    n_epochs, batch_size, learning_rate, l2 : int, int, float, float
        ``"sgd"``: passes over the data, mini-batch size, Adam step size and L2 penalty per example.
    chunk_rows : int, optional
        Chunk size when ``embeddings`` is an in-memory array.
    n_jobs : int or None
        ``"sgd"`` with in-memory embeddings: fit the folds in this many worker processes (joblib's loky;
        -1: all cores; None or 1: here, one after the other), when images x classes x embedding width
        reaches :data:`PARALLEL_MIN_WORK`. Each worker replays the random stream of every
        fold and updates only its own, so the weights are the same, bit for bit, for any ``n_jobs``.

    Returns
    -------
    KFoldProbe
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise InputError(ERROR_N_CLASSES.format(value=n_classes))
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise InputError(ERROR_N_FOLDS.format(value=n_folds))
    if method not in METHODS:
        raise InputError(ERROR_METHOD.format(value=method))
    check_n_jobs(n_jobs)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(ERROR_LABELS.format(max_index=n_classes - 1, row=0,
                                             value=labels.dtype if labels.ndim == 1 else labels.shape))
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise InputError(ERROR_LABELS.format(max_index=n_classes - 1, row=int(bad[0]), value=int(labels[bad[0]])),
                         row=int(bad[0]), column="label")
    n = labels.shape[0]
    if n < n_folds:
        raise InputError(ERROR_TOO_FEW_IMAGES.format(n_folds=n_folds, n=n))
    labels = labels.astype(np.int64)
    source = _as_source(embeddings, chunk_rows)
    fold = assign_folds(labels, n_folds=n_folds, seed=seed)

    # Standardisation statistics (float64 sums over one pass; no labels involved).
    total = total_sq = None
    for start, chunk in _iter_rows(source, n_rows=n):
        x = np.asarray(chunk, dtype=np.float64)
        if not np.isfinite(x).all():
            row = start + int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise InputError(ERROR_EMBEDDINGS_NOT_FINITE.format(row=row), row=row)
        total = x.sum(axis=0) if total is None else total + x.sum(axis=0)
        total_sq = (x * x).sum(axis=0) if total_sq is None else total_sq + (x * x).sum(axis=0)
    mean = total / n
    variance = np.maximum(total_sq / n - mean * mean, 0.0)
    scale = np.sqrt(variance)
    scale[scale < 1e-12] = 1.0
    mean, scale = mean.astype(np.float32), scale.astype(np.float32)
    n_features = mean.shape[0]

    if method == "auto":
        method = "lbfgs" if n <= max_lbfgs_rows else "sgd"
    if method == "lbfgs":
        weights, bias = _fit_lbfgs(source, labels, fold, mean, scale, n_classes=n_classes, n_folds=n_folds,
                                   c=c, seed=seed)
    else:
        settings = dict(n_classes=n_classes, n_folds=n_folds, n_features=n_features, seed=seed, n_epochs=n_epochs,
                        batch_size=batch_size, learning_rate=learning_rate, l2=l2)
        jobs = n_workers(n_jobs, at_most=n_folds)  # at most one per fold
        if jobs > 1 and isinstance(embeddings, np.ndarray) and n * n_classes * n_features >= PARALLEL_MIN_WORK:
            weights, bias = _fit_sgd_parallel(embeddings, chunk_rows, labels, fold, mean, scale, jobs=jobs,
                                              **settings)
        else:
            weights, bias = _fit_sgd(source, labels, fold, mean, scale, **settings)
    return KFoldProbe(n_classes=n_classes, n_folds=n_folds, method=method, seed=seed, fold=fold, mean=mean,
                      scale=scale, weights=weights, bias=bias)


def _fit_lbfgs(source, labels, fold, mean, scale, *, n_classes, n_folds, c, seed):
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([_standardise(chunk, mean, scale) for _, chunk in _iter_rows(source, n_rows=labels.shape[0])])
    weights = np.zeros((n_folds, x.shape[1], n_classes), dtype=np.float32)
    # Classes missing from a fold's training rows keep a very low bias: probability ~0, as "never seen".
    bias = np.full((n_folds, n_classes), -30.0, dtype=np.float32)
    for f in range(n_folds):
        train = fold != f
        present = np.unique(labels[train])
        if present.size == 1:
            bias[f, present[0]] = 0.0
            continue
        model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
        model.fit(x[train], labels[train])
        classes = model.classes_
        if classes.size == 2:  # sklearn keeps one weight vector: softmax([0, z]) = sigmoid(z)
            weights[f][:, classes[1]] = model.coef_[0]
            bias[f, classes[0]] = 0.0
            bias[f, classes[1]] = model.intercept_[0]
        else:
            weights[f][:, classes] = model.coef_.T
            bias[f, classes] = model.intercept_
    return weights, bias


def _one_blas_thread():
    """A context in which matrix products run on one thread.

    The probe's products are small (a 256-row mini-batch times a D x K matrix): shared between threads,
    their start-up and spinning cost more than the product itself (10x on a busy 2-core machine). One
    thread also makes the probe's numbers the same on every machine: OpenBLAS rounds a product split
    between threads differently (by ~1e-9 here), so they used to depend on the number of cores.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _fit_sgd(source, labels, fold, mean, scale, *, n_classes, n_features, n_folds, seed, n_epochs, batch_size,
             learning_rate, l2, fitted=None):
    with _one_blas_thread():
        return _sgd_steps(source, labels, fold, mean, scale, n_classes=n_classes, n_features=n_features,
                          n_folds=n_folds, seed=seed, n_epochs=n_epochs, batch_size=batch_size,
                          learning_rate=learning_rate, l2=l2, fitted=fitted)


def _fit_sgd_folds_in_worker(embeddings, chunk_rows, labels, fold, mean, scale, fitted, settings):
    """A worker's share of :func:`_fit_sgd_parallel`: the folds ``fitted``, with the same chunks as the caller."""
    return _fit_sgd(_as_source(embeddings, chunk_rows), labels, fold, mean, scale, fitted=fitted, **settings)


def _fit_sgd_parallel(embeddings, chunk_rows, labels, fold, mean, scale, *, jobs, **settings):
    """:func:`_fit_sgd` with the folds dealt to ``jobs`` loky worker processes (the embeddings reach them as a
    memory-mapped file, joblib's default for large arrays); each returns the weights of its folds."""
    from joblib import Parallel, delayed

    n_folds = settings["n_folds"]
    shares = [tuple(range(j, n_folds, jobs)) for j in range(jobs)]
    done = Parallel(n_jobs=jobs, backend="loky", batch_size=1, pre_dispatch="all")(
        delayed(_fit_sgd_folds_in_worker)(embeddings, chunk_rows, labels, fold, mean, scale, share, settings)
        for share in shares)
    weights, bias = done[0]
    for share, (w, b) in zip(shares[1:], done[1:]):
        for f in share:
            weights[f], bias[f] = w[f], b[f]
    return weights, bias


def _sgd_steps(source, labels, fold, mean, scale, *, n_classes, n_features, n_folds, seed, n_epochs, batch_size,
               learning_rate, l2, fitted=None):
    """Mini-batch Adam on every fold (``fitted``: only those folds; the others keep zero weights). The
    random stream is drawn for every fold in the same order whatever ``fitted`` is (a fold not fitted still
    shuffles its rows), so a fold's weights do not depend on which other folds are fitted."""
    fitted = frozenset(range(n_folds) if fitted is None else fitted)
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_folds, n_features, n_classes), dtype=np.float32)
    bias = np.zeros((n_folds, n_classes), dtype=np.float32)
    # Adam state per fold.
    m_w, v_w = np.zeros_like(weights), np.zeros_like(weights)
    m_b, v_b = np.zeros_like(bias), np.zeros_like(bias)
    steps = np.zeros(n_folds, dtype=np.int64)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    n = labels.shape[0]
    for _ in range(n_epochs):
        for start, chunk in _iter_rows(source, n_rows=n, n_features=n_features):
            x = _standardise(chunk, mean, scale)
            y = labels[start:start + x.shape[0]]
            folds = fold[start:start + x.shape[0]]
            for f in range(n_folds):
                rows = np.flatnonzero(folds != f)
                rng.shuffle(rows)
                if f not in fitted:
                    continue
                for b in range(0, rows.size, batch_size):
                    batch = rows[b:b + batch_size]
                    xb, yb = x[batch], y[batch]
                    p = _softmax(xb @ weights[f] + bias[f])
                    p[np.arange(batch.size), yb] -= 1.0
                    p /= batch.size
                    grad_w = xb.T @ p + l2 * weights[f]
                    grad_b = p.sum(axis=0)
                    steps[f] += 1
                    t = steps[f]
                    m_w[f] = beta1 * m_w[f] + (1 - beta1) * grad_w
                    v_w[f] = beta2 * v_w[f] + (1 - beta2) * grad_w * grad_w
                    m_b[f] = beta1 * m_b[f] + (1 - beta1) * grad_b
                    v_b[f] = beta2 * v_b[f] + (1 - beta2) * grad_b * grad_b
                    correction = np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                    weights[f] -= learning_rate * correction * m_w[f] / (np.sqrt(v_w[f]) + eps)
                    bias[f] -= learning_rate * correction * m_b[f] / (np.sqrt(v_b[f]) + eps)
    return weights, bias


def compute_out_of_sample_probabilities(embeddings, labels, *, n_classes: int, n_folds: int = 5, seed: int = 0,
                                        method: str = "auto", chunk_rows: int | None = None,
                                        **fit_options) -> np.ndarray:
    """Fit a :class:`KFoldProbe` and return every image's out-of-sample probabilities (N, K) float32.

    For N x K too large for memory, use :func:`fit_kfold_probe` and ``probe.probability_chunks(...)``
    as the ``probabilities`` argument of ``estimate_label_noise`` instead.
    """
    probe = fit_kfold_probe(embeddings, labels, n_classes=n_classes, n_folds=n_folds, seed=seed, method=method,
                            chunk_rows=chunk_rows, **fit_options)
    return probe.predict_out_of_sample(embeddings, chunk_rows=chunk_rows)
