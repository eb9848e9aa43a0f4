"""Which probabilities rank the label suspects (issue 13, item 3: better screening).

Confident learning is only as good as the probabilities it is given, and it needs them *out of sample*: a
model that was trained on the audited images is over-confident on exactly the labels it memorised. What the
audit can make from what it has:

* ``model``: the audited model's own probabilities (out of sample only if the model never saw these images,
  which the audit cannot know);
* ``probe``: a K-fold logistic-regression probe on the model's embeddings (:mod:`audit.analysis.probe`),
  out of sample by construction (each image is scored by a probe that never saw its label);
* ``combined``: the mean of the two, a two-member ensemble: it keeps most of the model's accuracy while the
  probe's half of every probability comes from a fit that never saw the image.

``auto`` (the default) is a rule fixed in advance, not a score against the given labels (such a score favours
exactly the in-sample model whose probabilities confident learning cannot use):

* no embeddings (or the probe failed): ``model``;
* the model agrees with the given labels clearly more often than the probe does (at least
  :data:`MEMORISED_MIN_GAP` more, and a one-sided McNemar z of at least :data:`MEMORISED_MIN_Z` over the
  images where they differ): ``probe``. The model's last layer is itself a linear map of these embeddings,
  so on images it never saw it cannot beat a linear probe fitted out of sample on the same embeddings by
  much; when it does, it has most likely seen these labels (trained on them) and its confidence in them
  says nothing. (A probe with very few images per class can also fall behind; then ask for ``combined``.)
* otherwise: ``combined``, which on a model that did not see the images removes most of the flags that are
  the model's own errors.

Every candidate's accuracy and log loss against the given labels are recorded as diagnostics.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audit.errors import InputError

SOURCES = ("auto", "model", "probe", "combined")
ERROR_SOURCE = "--label-noise-source must be one of auto, model, probe, combined; got {value!r}"
ERROR_NEEDS_EMBEDDINGS = ("--label-noise-source {source} needs the model's embeddings, and this audit has none (a "
                          "predictions file, or a model that gives no embeddings): use auto or model")

#: What each source is, in words (``analyses.label_noise.source_description``).
DESCRIPTIONS = {
    "model": "the model's own probabilities",
    "probe": "out-of-sample probabilities of a K-fold logistic-regression probe on the model's embeddings",
    "combined": ("the mean of the model's probabilities and the out-of-sample probabilities of a K-fold "
                 "logistic-regression probe on its embeddings"),
}
REASON_REQUESTED = "requested with --label-noise-source {source}"
REASON_AUTO_COMBINED = ("auto: embeddings are available, so the model's probabilities are averaged with a probe "
                        "that never saw each image's label (out of sample by construction)")
REASON_AUTO_MEMORISED = ("auto: the model agrees with the given labels on {model:.1%} of images, a probe fitted out of "
                         "sample on its own embeddings on {probe:.1%} (McNemar z = {z:.1f}): the model has most likely "
                         "seen these labels, so the probe's probabilities are used")
#: ``auto`` treats the model as having seen the labels when it beats the out-of-sample probe by this much...
MEMORISED_MIN_GAP = 0.05
#: ... with this one-sided McNemar z (p < 0.0005) over the images where exactly one of the two is right.
MEMORISED_MIN_Z = 3.29
REASON_AUTO_NO_EMBEDDINGS = "auto: the audit has no embeddings, so only the model's probabilities are available"
REASON_AUTO_STREAMED = "auto: the probabilities were streamed in chunks, so only the model's are used"
REASON_AUTO_PROBE_FAILED = "auto: the probe on the embeddings could not be fitted ({error}); the model's probabilities are used"
REASON_PROBE_FAILED = ("{source} was requested but the probe on the embeddings could not be fitted ({error}); the "
                       "model's probabilities are used")


@dataclass(frozen=True, eq=False)
class ScreeningProbabilities:
    """The probabilities chosen for label screening, and why.

    Attributes
    ----------
    probabilities : ndarray (N, K) float32
        Rows in image order, columns in class order.
    source : str
        ``model``, ``probe`` or ``combined``: what was used.
    requested : str
        What was asked for (``auto`` or a source).
    reason : str
        One sentence: why this source.
    candidates : dict
        Per available source: ``{"accuracy", "log_loss"}`` of its probabilities against the *given* labels
        (diagnostics only; the given labels are what is being checked).
    alternatives : dict
        The probabilities of the sources not used, by name (for cross-checks), not serialised.
    """

    probabilities: np.ndarray
    source: str
    requested: str
    reason: str
    candidates: dict = field(default_factory=dict)
    alternatives: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.source]

    def to_dict(self) -> dict:
        """JSON-safe record for ``analyses.label_noise.source_choice``."""
        return {"requested": self.requested, "used": self.source, "reason": self.reason,
                "candidates": {name: dict(values) for name, values in self.candidates.items()}}


def _memorised(model: np.ndarray, probe: np.ndarray | None, labels: np.ndarray) -> dict | None:
    """``{"model", "probe", "z"}`` when the model agrees with the labels clearly more than the probe (see the
    module docstring), else None. ``model``, ``probe``: each image's most probable class by either."""
    if probe is None or labels.size == 0:
        return None
    model_right = np.asarray(model) == labels
    probe_right = np.asarray(probe) == labels
    only_model = int(np.count_nonzero(model_right & ~probe_right))
    only_probe = int(np.count_nonzero(probe_right & ~model_right))
    if only_model + only_probe == 0:
        return None
    z = (only_model - only_probe) / np.sqrt(only_model + only_probe)
    gap = (only_model - only_probe) / labels.size
    if gap >= MEMORISED_MIN_GAP and z >= MEMORISED_MIN_Z:
        return {"model": float(model_right.mean()), "probe": float(probe_right.mean()), "z": float(z)}
    return None


#: Up to this many images the probe is fitted with lbfgs (exact); beyond, with chunked mini-batch descent,
#: which reaches the same held-out accuracy in a fraction of the time (lbfgs took 62 s on 10,000 x 64).
LBFGS_MAX_IMAGES = 2000


def compute_probe_probabilities(embeddings, labels, *, n_classes: int, seed: int = 0) -> np.ndarray:
    """Out-of-sample probabilities of the 5-fold probe on the embeddings, as the audit fits it."""
    from audit.analysis.probe import compute_out_of_sample_probabilities

    labels = np.asarray(labels)
    method = "lbfgs" if labels.shape[0] <= LBFGS_MAX_IMAGES else "sgd"
    return compute_out_of_sample_probabilities(embeddings, labels, n_classes=n_classes, seed=seed, method=method)


def fit_probe(embeddings, labels, *, n_classes: int, seed: int = 0, n_jobs: int | None = None):
    """The probe of :func:`compute_probe_probabilities`, fitted but not applied (a
    :class:`~audit.analysis.probe.KFoldProbe`), for :func:`choose_screening_sources` (``n_jobs``: worker
    processes for the folds of a mini-batch fit; the same weights for any value)."""
    from audit.analysis.probe import fit_kfold_probe

    labels = np.asarray(labels)
    method = "lbfgs" if labels.shape[0] <= LBFGS_MAX_IMAGES else "sgd"
    return fit_kfold_probe(embeddings, labels, n_classes=n_classes, seed=seed, method=method, n_jobs=n_jobs)


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise InputError(ERROR_SOURCE.format(value=source))
    return source


#: Rows combined at a time by :func:`combine_probabilities` (float64 work arrays of a block, not of the matrix).
COMBINE_CHUNK_ROWS = 8192


def _combine_block(model: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Rows of :func:`combine_probabilities`: float64 mean, renormalised, as float32 (row by row exact)."""
    mean = (np.asarray(model, dtype=np.float64) + np.asarray(probe, dtype=np.float64)) / 2.0
    mean /= mean.sum(axis=1, keepdims=True)
    return mean.astype(np.float32)


def combine_probabilities(model: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Mean of two probability matrices of the same shape, rows renormalised (float32).

    Computed in float64 a block of :data:`COMBINE_CHUNK_ROWS` rows at a time (each row's numbers are those of
    the whole-matrix computation): at 100,000 x 1,000 the whole-matrix float64 temporaries were 2.4 GB."""
    if model.shape != probe.shape:
        raise ValueError(f"probabilities of shape {model.shape} and {probe.shape} cannot be combined")
    combined = np.empty(model.shape, dtype=np.float32)
    for start in range(0, model.shape[0], COMBINE_CHUNK_ROWS):
        stop = start + COMBINE_CHUNK_ROWS
        combined[start:stop] = _combine_block(model[start:stop], probe[start:stop])
    return combined


# -- the same choice from chunk sources (the matrices never whole in memory) ---------------------------------
class _RowReader:
    """Sequential reader of a chunk source: :meth:`take` returns the next ``n`` rows as a fresh array (chunks
    of a source may be views of a reused buffer, valid only until the next one is requested)."""

    def __init__(self, source):
        self._chunks = iter(source())
        self._chunk = None
        self._offset = 0

    def take(self, n: int) -> np.ndarray:
        pieces = []
        while n > 0:
            if self._chunk is None or self._offset >= self._chunk.shape[0]:
                self._chunk = np.asarray(next(self._chunks))
                self._offset = 0
                continue
            piece = self._chunk[self._offset:self._offset + n]
            pieces.append(np.array(piece))
            self._offset += piece.shape[0]
            n -= piece.shape[0]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)


def reblock(source, *, n_rows: int, chunk_rows: int):
    """A chunk source giving the rows of ``source`` in blocks of exactly ``chunk_rows`` rows (the last one
    shorter), each a fresh array: the blocks an analysis cuts an in-memory array into, so a streamed pass
    sums in the same order as the in-memory one."""
    def iterate():
        reader = _RowReader(source)
        for start in range(0, n_rows, chunk_rows):
            yield reader.take(min(chunk_rows, n_rows - start))
    return iterate


def combined_chunks(model_source, probe_source):
    """Chunk source of :func:`combine_probabilities` of two chunk sources (blocks of
    :data:`COMBINE_CHUNK_ROWS` rows within each chunk of ``probe_source``; every row as in the matrix)."""
    def iterate():
        model = _RowReader(model_source)
        for probe in probe_source():
            for start in range(0, probe.shape[0], COMBINE_CHUNK_ROWS):
                block = probe[start:start + COMBINE_CHUNK_ROWS]
                yield _combine_block(model.take(block.shape[0]), block)
    return iterate


def prediction_columns(source, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted, label_probability)`` of every image from one pass over a chunk source (argmax of each
    row, first maximum on ties; the probability of the given label, as float32), as from the whole matrix."""
    from audit.analysis.prediction_columns import PredictionColumns

    columns = PredictionColumns.from_chunks(source, labels, rank=False)
    return columns.predicted, columns.label_probability.astype(np.float32, copy=False)


@dataclass(frozen=True, eq=False)
class ScreeningSources:
    """The screening choice made from chunk sources (what :class:`ScreeningProbabilities` holds as arrays).

    Attributes
    ----------
    sources : dict
        A chunk source of the probabilities of every available candidate (``model``, ``probe``,
        ``combined``), by name.
    source, requested, reason, candidates
        As in :class:`ScreeningProbabilities`.
    """

    sources: dict
    source: str
    requested: str
    reason: str
    candidates: dict = field(default_factory=dict)

    @property
    def probabilities(self):
        """The chunk source of the probabilities used."""
        return self.sources[self.source]

    @property
    def alternatives(self) -> dict:
        """Chunk sources of the candidates not used, by name."""
        return {name: values for name, values in self.sources.items() if name != self.source}

    def to_dict(self) -> dict:
        return {"requested": self.requested, "used": self.source, "reason": self.reason,
                "candidates": {name: dict(values) for name, values in self.candidates.items()}}


def keep_in_memory(source):
    """The default ``keep`` of :func:`choose_screening_sources`: the rows of a chunk source as one array, and
    a chunk source over it (its blocks are views)."""
    values = np.concatenate([np.array(chunk) for chunk in source()], axis=0)
    return lambda: iter((values,))


def choose_screening_sources(model_source, labels, *, source: str = "auto", model_columns=None, probe=None,
                             embeddings=None, probe_error: str | None = None,
                             keep=keep_in_memory) -> ScreeningSources:
    """:func:`choose_screening_probabilities` on chunk sources: the same choice and the same numbers, with
    one chunk of the matrices in memory at a time.

    Parameters
    ----------
    model_source : callable
        Chunk source of the model's probabilities (float32, consecutive rows in image order).
    labels : array-like (N,) of int
    source : {"auto", "model", "probe", "combined"}
    model_columns : tuple of ndarray, optional
        ``(predicted, label_probability)`` of the model, when already computed (else one pass computes them).
    probe : KFoldProbe, optional
        The fitted probe (:func:`audit.analysis.probe.fit_kfold_probe`); its probabilities are recomputed
        chunk by chunk from ``embeddings`` (the chunks of :meth:`KFoldProbe.predict_out_of_sample`).
    embeddings : ndarray (N, D), optional
    probe_error : str, optional
    keep : callable
        ``keep(source) -> source``: computes the probe's and the combined probabilities once and keeps them for
        the passes that follow (each estimate makes three): in memory by default; the pipeline gives one that
        writes a temporary ``.npy`` when the matrix is large (this module reads and writes no file).
    """
    check_source(source)
    labels = np.asarray(labels, dtype=np.int64)
    columns = {"model": model_columns if model_columns is not None else prediction_columns(model_source, labels)}
    sources = {"model": model_source}
    if probe is not None:
        sources["probe"] = keep(probe.probability_chunks(embeddings))
        sources["combined"] = keep(combined_chunks(model_source, sources["probe"]))
        columns["probe"] = prediction_columns(sources["probe"], labels)
        columns["combined"] = prediction_columns(sources["combined"], labels)
    used, reason = _choose(source, columns, labels, probe_error)
    candidates = {name: score_columns(predicted, label_probability, labels)
                  for name, (predicted, label_probability) in columns.items()}
    return ScreeningSources(sources=sources, source=used, requested=source, reason=reason, candidates=candidates)


def _choose(source: str, columns: dict, labels: np.ndarray, probe_error: str | None) -> tuple[str, str]:
    """``(used, reason)`` from the candidates' predicted classes (see the module docstring for the rule)."""
    if source in ("probe", "combined") and source not in columns and not probe_error:
        raise InputError(ERROR_NEEDS_EMBEDDINGS.format(source=source))
    if source in ("probe", "combined") and source not in columns:
        return "model", REASON_PROBE_FAILED.format(source=source, error=probe_error)
    if source == "auto":
        memorised = _memorised(columns["model"][0], columns["probe"][0] if "probe" in columns else None, labels)
        if memorised is not None:
            return "probe", REASON_AUTO_MEMORISED.format(**memorised)
        if "combined" in columns:
            return "combined", REASON_AUTO_COMBINED
        if probe_error:
            return "model", REASON_AUTO_PROBE_FAILED.format(error=probe_error)
        return "model", REASON_AUTO_NO_EMBEDDINGS
    return source, REASON_REQUESTED.format(source=source)


def score_columns(predicted, label_probability, labels) -> dict:
    """Accuracy and mean log loss against the given labels from per-image columns (most probable class,
    probability of the given label; log clipped at 1e-12): the same numbers whether or not the matrix is held."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return {"accuracy": float("nan"), "log_loss": float("nan")}
    label_probability = np.asarray(label_probability).astype(np.float64)
    return {"accuracy": float((np.asarray(predicted) == labels).mean()),
            "log_loss": float(-np.log(np.clip(label_probability, 1e-12, 1.0)).mean())}


def score_against_labels(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and mean log loss of ``probabilities`` against the given labels (see :func:`score_columns`)."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    return score_columns(probabilities.argmax(axis=1), probabilities[np.arange(labels.shape[0]), labels], labels)


def choose_screening_probabilities(model_probabilities: np.ndarray, labels, *, source: str = "auto",
                                   probe_probabilities: np.ndarray | None = None,
                                   probe_error: str | None = None) -> ScreeningProbabilities:
    """Pick the probabilities that rank label suspects (see the module docstring for the rule).

    Parameters
    ----------
    model_probabilities : ndarray (N, K)
        The audited model's probabilities (or a predictions file's).
    labels : array-like (N,) of int
        Given class indices.
    source : {"auto", "model", "probe", "combined"}
    probe_probabilities : ndarray (N, K), optional
        Out-of-sample probabilities of the probe (None: no embeddings, or the probe failed).
    probe_error : str, optional
        Why the probe failed, when it did (said in the reason under ``auto``).

    Raises
    ------
    InputError
        An unknown source, or ``probe``/``combined`` requested without probe probabilities.
    """
    check_source(source)
    labels = np.asarray(labels, dtype=np.int64)
    model = np.asarray(model_probabilities, dtype=np.float32)
    available = {"model": model}
    if probe_probabilities is not None:
        probe = np.asarray(probe_probabilities, dtype=np.float32)
        available["probe"] = probe
        available["combined"] = combine_probabilities(model, probe)
    columns = {name: (values.argmax(axis=1), None) for name, values in available.items()}
    used, reason = _choose(source, columns, labels, probe_error)
    candidates = {name: score_against_labels(values, labels) for name, values in available.items()}
    alternatives = {name: values for name, values in available.items() if name != used}
    return ScreeningProbabilities(probabilities=available[used], source=used, requested=source, reason=reason,
                                  candidates=candidates, alternatives=alternatives)
