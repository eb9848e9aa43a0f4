"""Per-image columns of a model's probabilities, computed in one pass over a chunk source (see
:mod:`audit.io.arrays`), so the ``(N, K)`` matrix need not be in memory: the predicted class, its
probability, the probability of the given label and the label's rank. The label-noise screening and the
pipeline's steps read them from here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ERROR_COLUMNS_LENGTH = ("prediction columns have {found} rows but there are {expected} images: compute them "
                        "from the same probabilities, one row per image in table order")


@dataclass(frozen=True)
class PredictionColumns:
    """Per-image model outputs computed chunk by chunk, so the ``(N, K)`` matrix need not be in memory.

    Attributes
    ----------
    predicted : ndarray (N,) of int64
        Most probable class (``argmax`` of the row, first maximum on ties).
    confidence : ndarray (N,)
        Probability of the predicted class (the row's maximum), in the probabilities' dtype.
    label_probability : ndarray (N,)
        Probability of the given label.
    label_rank : ndarray (N,) of int64 or None
        Number of classes more probable than the given label (0: the label is the top class, or tied with
        it); used for top-k accuracy.
    """

    predicted: np.ndarray
    confidence: np.ndarray
    label_probability: np.ndarray
    label_rank: np.ndarray | None = None

    @staticmethod
    def of_chunk(chunk: np.ndarray, labels: np.ndarray, *,
                 rank: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """``(predicted, confidence, label_probability, label_rank)`` of one ``(rows, K)`` chunk and its labels;
        ``label_rank`` = number of classes more probable than the label (for top-k accuracy; None when
        ``rank`` is False: it costs a second pass over the chunk)."""
        predicted = chunk.argmax(axis=1)
        confidence = chunk.max(axis=1)
        label_probability = chunk[np.arange(chunk.shape[0]), labels]
        label_rank = (chunk > label_probability[:, None]).sum(axis=1) if rank else None
        return predicted, confidence, label_probability, label_rank

    @classmethod
    def from_chunks(cls, source, labels, *, rank: bool = True) -> "PredictionColumns":
        """One pass over a chunk source (see :mod:`audit.io.arrays`); ``labels`` = class index per image
        (``rank=False``: without ``label_rank``).

        Raises
        ------
        ValueError
            The source gave another number of rows than there are labels (:data:`ERROR_COLUMNS_LENGTH`).
        """
        labels = np.asarray(labels, dtype=np.int64)
        n = labels.shape[0]
        predicted = np.empty(n, dtype=np.int64)
        label_rank = np.empty(n, dtype=np.int64) if rank else None
        confidence = label_probability = None
        start = 0
        for chunk in source():
            stop = start + chunk.shape[0]
            if stop > n:
                raise ValueError(ERROR_COLUMNS_LENGTH.format(found=f"more than {n}", expected=n))
            columns = cls.of_chunk(chunk, labels[start:stop], rank=rank)
            if confidence is None:
                confidence = np.empty(n, dtype=columns[1].dtype)
                label_probability = np.empty(n, dtype=columns[2].dtype)
            predicted[start:stop], confidence[start:stop], label_probability[start:stop] = columns[:3]
            if rank:
                label_rank[start:stop] = columns[3]
            start = stop
        if start != n:
            raise ValueError(ERROR_COLUMNS_LENGTH.format(found=start, expected=n))
        return cls(predicted=predicted, confidence=confidence, label_probability=label_probability,
                   label_rank=label_rank)
