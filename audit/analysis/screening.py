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
    module docstring), else None."""
    if probe is None or labels.size == 0:
        return None
    model_right = model.argmax(axis=1) == labels
    probe_right = probe.argmax(axis=1) == labels
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


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise InputError(ERROR_SOURCE.format(value=source))
    return source


#: Rows combined at a time by :func:`combine_probabilities` (float64 work arrays of a block, not of the matrix).
COMBINE_CHUNK_ROWS = 8192


def combine_probabilities(model: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Mean of two probability matrices of the same shape, rows renormalised (float32).

    Computed in float64 a block of :data:`COMBINE_CHUNK_ROWS` rows at a time (each row's numbers are those of
    the whole-matrix computation): at 100,000 x 1,000 the whole-matrix float64 temporaries were 2.4 GB."""
    if model.shape != probe.shape:
        raise ValueError(f"probabilities of shape {model.shape} and {probe.shape} cannot be combined")
    combined = np.empty(model.shape, dtype=np.float32)
    for start in range(0, model.shape[0], COMBINE_CHUNK_ROWS):
        stop = start + COMBINE_CHUNK_ROWS
        mean = (np.asarray(model[start:stop], dtype=np.float64) + np.asarray(probe[start:stop], dtype=np.float64)) / 2.0
        mean /= mean.sum(axis=1, keepdims=True)
        combined[start:stop] = mean
    return combined


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
    if source in ("probe", "combined") and source not in available and not probe_error:
        raise InputError(ERROR_NEEDS_EMBEDDINGS.format(source=source))
    if source in ("probe", "combined") and source not in available:
        used, reason = "model", REASON_PROBE_FAILED.format(source=source, error=probe_error)
    elif source == "auto":
        memorised = _memorised(model, available.get("probe"), labels)
        if memorised is not None:
            used, reason = "probe", REASON_AUTO_MEMORISED.format(**memorised)
        elif "combined" in available:
            used, reason = "combined", REASON_AUTO_COMBINED
        elif probe_error:
            used, reason = "model", REASON_AUTO_PROBE_FAILED.format(error=probe_error)
        else:
            used, reason = "model", REASON_AUTO_NO_EMBEDDINGS
    else:
        used, reason = source, REASON_REQUESTED.format(source=source)
    candidates = {name: score_against_labels(values, labels) for name, values in available.items()}
    alternatives = {name: values for name, values in available.items() if name != used}
    return ScreeningProbabilities(probabilities=available[used], source=used, requested=source, reason=reason,
                                  candidates=candidates, alternatives=alternatives)
