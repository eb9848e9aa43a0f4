"""Load a model file and run it: TorchScript, ONNX, or a ``state_dict`` checkpoint with ``--arch``.

Nothing here unpickles code: checkpoints go through ``torch.load(..., weights_only=True)`` and a file that
holds pickled objects other than tensors and plain containers is refused with a :class:`ModelError`.

The kind of a file is read from its content, not its extension:

- a zip archive holding ``constants.pkl`` or a ``code/`` folder: TorchScript (``torch.jit.load``);
- another zip archive, or a file starting with a pickle header: a torch checkpoint (needs ``--arch``);
- a protobuf starting with the ONNX ``ir_version`` field: ONNX (onnxruntime, CPUExecutionProvider).

Output conventions: the first output (or the only one) holds the class scores ``(n, K)``; a second 2-D
output ``(n, D)``, when a TorchScript module returns a tuple or an ONNX graph has two outputs, is taken as
embeddings. Registered architectures always give embeddings (the penultimate features).
"""
from __future__ import annotations

import csv
import hashlib
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from audit.errors import ModelError
from audit.model.sidecar import Preprocessing, find_sidecar, load_sidecar, preprocess_batch

__all__ = [
    "LoadedModel",
    "load_model",
    "detect_model_kind",
    "iter_predictions",
    "softmax",
    "align_to_dataset",
    "load_class_map",
    "file_sha256",
    "n_threads",
]

KIND_TORCHSCRIPT = "torchscript"
KIND_ONNX = "onnx"
KIND_STATE_DICT = "state_dict"

ERROR_MODEL_NOT_FOUND = "Model file {file} does not exist or is not a file. Check the --model path."
ERROR_MODEL_UNKNOWN_FORMAT = (
    "Cannot tell what kind of model {file} is: it is neither TorchScript (torch.jit.save), ONNX, nor a "
    "torch checkpoint. Export the model as TorchScript or ONNX, or save its state_dict with torch.save."
)
ERROR_MODEL_PICKLED_CODE = (
    "Refusing to load {file}: it holds pickled Python objects or code, not just weights ({reason}). "
    "Loading it could run arbitrary code. Save the weights with torch.save(model.state_dict(), path) and "
    "pass --arch, or export the model with torch.jit.save or to ONNX."
)
ERROR_MODEL_LOAD_FAILED = "Cannot load the {kind} model {file}: {reason}."
ERROR_MODEL_NEEDS_ARCH = (
    "{file} is a weights checkpoint (state_dict), which needs the network's code: pass --arch NAME "
    "(registered: {known}), or export the model as TorchScript or ONNX."
)
ERROR_MODEL_NOT_STATE_DICT = (
    "{file} does not hold a state_dict (a mapping of parameter names to tensors); found {found}. "
    "Save it with torch.save(model.state_dict(), path) or torch.save({{'state_dict': ...}}, path)."
)
ERROR_MODEL_KEYS_MISMATCH = (
    "The checkpoint {file} does not fit --arch {arch}: {detail}. Check that --arch names the network the "
    "weights were trained with."
)
ERROR_MODEL_INPUT_SIZE = (
    "The ONNX model {file} expects input of height x width {model_size}, but the preprocessing ({source}) "
    "gives {size}. Fix 'input_size' in the preprocessing file."
)
ERROR_MODEL_BATCH = "Model input batch must be a float32 array of shape (n, 3, {h}, {w}); got {found}."
ERROR_MODEL_RUN_FAILED = "Running the model {file} failed: {reason}."
ERROR_MODEL_OUTPUT_SHAPE = (
    "The model {file} returned scores of shape {shape} for a batch of {n} images; expected (n, number of classes)."
)
ERROR_MODEL_OUTPUT_NAN = (
    "The model {file} produced NaN or infinite outputs (first at batch position {position}). Check the "
    "preprocessing (mean/std/scale) and that the weights are intact."
)
ERROR_MODEL_NOT_PROBABILITIES = (
    "The preprocessing for {file} says output is \"probabilities\", but batch position {position} holds "
    "values outside [0, 1] or not summing to 1. Set \"output\": \"logits\" if the model has no final softmax."
)
ERROR_MODEL_LOOKS_SOFTMAX = (
    "The preprocessing for {file} says output is \"logits\", but every row of a batch of {n} is already in "
    "[0, 1] and sums to 1: the model ends in a softmax, and a second one would flatten its confidences. Set "
    "\"output\": \"probabilities\"."
)
ERROR_MODEL_N_CLASSES = (
    "The model {file} outputs {k} scores per image, but its class list has {n} names ({classes}). "
    "Fix 'classes' in the preprocessing file."
)
ERROR_ALIGN_N_CLASSES = (
    "The model outputs {k} scores per image, but its class list has {n} names ({classes}). "
    "Fix 'classes' in the preprocessing file."
)
ERROR_CLASS_MAP_UNREADABLE = (
    "Cannot read the class map {file}: {reason}. Give a CSV with the header model_class,dataset_class."
)
ERROR_CLASS_MAP_HEADER = (
    "The class map {file} must have the header model_class,dataset_class; found {found}."
)
ERROR_CLASS_MAP_EMPTY_VALUE = "Row {row} of the class map {file} has an empty {column}. Fill it in or delete the row."
ERROR_CLASS_MAP_DUPLICATE = (
    "Row {row} of the class map {file} maps the model class '{name}' a second time; each model class "
    "may appear once."
)
ERROR_NO_MODEL_CLASSES = (
    "The model's class names are unknown: add 'classes' (the model output order) to the preprocessing "
    "file, or pass --arch for a registered default."
)
ERROR_MODEL_CLASS_UNMAPPED = (
    "The model class '{name}' maps to no data set class (data set classes: {dataset}). Add a row "
    "'{name},<dataset class>' to --class-map."
)
ERROR_DATASET_CLASS_UNMAPPED = (
    "The data set class '{name}' receives no model class (model classes: {model}). Add a row "
    "'<model class>,{name}' to --class-map, or check the label column."
)
ERROR_CLASS_MAP_UNKNOWN_MODEL_CLASS = (
    "The class map names the model class '{name}', which the model does not have (model classes: {model})."
)
ERROR_CLASS_MAP_UNKNOWN_DATASET_CLASS = (
    "The class map maps '{model_class}' to '{name}', which is not a data set class (data set classes: {dataset})."
)


ERROR_NO_PREPROCESSING = (
    "No preprocessing is known for the model {model}: give --preprocess FILE, put a model.json (or "
    "{stem}.json) beside the model, or name a registered architecture with --arch."
)


def one_line(error: BaseException, *, limit: int = 300) -> str:
    """An exception's text as one line for a user message: white space (TorchScript and onnxruntime put
    source excerpts and stack traces over several lines) collapsed, cut at ``limit`` characters, no final
    period (the message adds its own)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > limit:
        text = text[:limit - 3].rstrip() + "..."
    return text.rstrip(".")


def n_threads() -> int:
    """Threads used for inference: ``$IMAGEFAIR_NUM_THREADS`` if set, else min(2, CPU count)."""
    value = os.environ.get("IMAGEFAIR_NUM_THREADS")
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(2, os.cpu_count() or 1))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_model_kind(path: str | os.PathLike) -> str:
    """``"torchscript"``, ``"onnx"`` or ``"state_dict"`` from the file content (see module docstring)."""
    source = str(path)
    if not Path(path).is_file():
        raise ModelError(ERROR_MODEL_NOT_FOUND.format(file=source), source=source)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelError(ERROR_MODEL_LOAD_FAILED.format(kind="zip", file=source, reason=one_line(exc)),
                             source=source) from exc
        # torch.jit.save writes <root>/constants.pkl and <root>/code/...; torch.save writes only
        # <root>/data.pkl with <root>/data/<n> tensor storages.
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return KIND_TORCHSCRIPT
        if any(n.endswith("data.pkl") for n in names):
            return KIND_STATE_DICT
        raise ModelError(ERROR_MODEL_UNKNOWN_FORMAT.format(file=source), source=source)
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head[:1] == b"\x80":  # pickle protocol >= 2: the legacy torch.save format (or a bare pickle)
        return KIND_STATE_DICT
    if head[:1] == b"\x08":  # protobuf field 1 varint: ModelProto.ir_version, written first
        return KIND_ONNX
    raise ModelError(ERROR_MODEL_UNKNOWN_FORMAT.format(file=source), source=source)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable (the row maximum is subtracted first); float32 out."""
    scores = np.asarray(scores, dtype=np.float64)
    # finite logits far apart (1e308 and -1e308) overflow to -inf in the difference: exp gives 0, as it should;
    # the warning numpy would print on stderr is not for the user
    with np.errstate(over="ignore"):
        shifted = scores - scores.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted.astype(np.float32)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run, and what is known about it.

    Attributes
    ----------
    path : str
        The model file as given.
    kind : str
        ``"torchscript"``, ``"onnx"`` or ``"state_dict"``.
    sha256 : str
        Hex sha256 of the model file's bytes (provenance, cache key).
    preprocessing : Preprocessing
        How images are prepared; ``preprocessing.output`` says whether scores are logits.
    preprocessing_source : str
        Where the preprocessing came from (see :func:`resolve_preprocessing`).
    classes : tuple of str or None
        Model output class names in output order (None when unknown).
    arch : str or None
        The ``--arch`` name, when given.
    class_map : dict or None
        ``{model_class: dataset_class}`` from ``--class-map``, when given.
    """

    path: str
    kind: str
    sha256: str
    preprocessing: Preprocessing
    preprocessing_source: str
    classes: tuple[str, ...] | None
    arch: str | None = None
    class_map: dict | None = None
    _run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]] = field(default=None, repr=False,
                                                                            compare=False)

    def to_dict(self) -> dict:
        """JSON-safe provenance: path, kind, sha256, arch, classes, preprocessing and its source."""
        return {
            "path": self.path,
            "kind": self.kind,
            "sha256": self.sha256,
            "arch": self.arch,
            "classes": None if self.classes is None else list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "preprocessing_source": self.preprocessing_source,
            "class_map": None if self.class_map is None else dict(self.class_map),
        }

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Run one batch.

        Parameters
        ----------
        batch : numpy.ndarray
            ``(n, 3, h, w)`` float32, already preprocessed (:func:`preprocess_batch`).

        Returns
        -------
        probabilities : numpy.ndarray
            ``(n, K)`` float32 in the model's class order; logits are turned into probabilities with a
            numerically stable softmax.
        embeddings : numpy.ndarray or None
            ``(n, D)`` float32 penultimate features, or None when the model does not expose them.
        """
        h, w = self.preprocessing.input_size
        if (not isinstance(batch, np.ndarray) or batch.dtype != np.float32 or batch.ndim != 4
                or batch.shape[1:] != (3, h, w)):
            found = (getattr(batch, "shape", None), str(getattr(batch, "dtype", type(batch).__name__)))
            raise ModelError(ERROR_MODEL_BATCH.format(h=h, w=w, found=found), source=self.path)
        n = batch.shape[0]
        if n == 0:
            k = len(self.classes) if self.classes is not None else 0
            return np.zeros((0, k), dtype=np.float32), None
        try:
            scores, embeddings = self._run(np.ascontiguousarray(batch))
        except ModelError:
            raise
        except Exception as exc:  # the runtimes raise many types; the user needs one clear line
            raise ModelError(ERROR_MODEL_RUN_FAILED.format(file=self.path, reason=one_line(exc)), source=self.path) from exc
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[0] != n:
            raise ModelError(ERROR_MODEL_OUTPUT_SHAPE.format(file=self.path, shape=scores.shape, n=n),
                             source=self.path)
        if self.classes is not None and scores.shape[1] != len(self.classes):
            raise ModelError(_n_classes_message(self.path, scores.shape[1], self.classes), source=self.path)
        bad = ~np.isfinite(scores).all(axis=1)
        if bad.any():
            raise ModelError(ERROR_MODEL_OUTPUT_NAN.format(file=self.path, position=int(np.argmax(bad))),
                             source=self.path)
        if self.preprocessing.output == "logits":
            # real logits are almost never all in [0, 1] with rows summing to 1; softmaxing probabilities again
            # would silently change every confidence (issue 11 item 5)
            if _probability_rows(scores).all():
                raise ModelError(ERROR_MODEL_LOOKS_SOFTMAX.format(file=self.path, n=n), source=self.path)
            probabilities = softmax(scores)
        else:
            probabilities = scores.astype(np.float32, copy=False)
            wrong = ~_probability_rows(probabilities)
            if wrong.any():
                raise ModelError(ERROR_MODEL_NOT_PROBABILITIES.format(file=self.path,
                                                                      position=int(np.argmax(wrong))),
                                 source=self.path)
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or embeddings.shape[0] != n:
                embeddings = None  # not per-image features: ignore rather than guess
            elif not np.isfinite(embeddings).all():
                position = int(np.argmax(~np.isfinite(embeddings).all(axis=1)))
                raise ModelError(ERROR_MODEL_OUTPUT_NAN.format(file=self.path, position=position),
                                 source=self.path)
        return probabilities, embeddings


def _probability_rows(scores: np.ndarray) -> np.ndarray:
    """Per row: finite model outputs that read as probabilities (each in [0, 1] within 1e-6, the row summing to 1
    within 1e-3, summed in float64)."""
    return ((scores.min(axis=1) >= -1e-6) & (scores.max(axis=1) <= 1 + 1e-6)
            & (np.abs(scores.sum(axis=1, dtype=np.float64) - 1.0) <= 1e-3))


def _n_classes_message(path: str, k: int, classes) -> str:
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    return ERROR_MODEL_N_CLASSES.format(file=path, k=k, n=len(classes), classes=shown)


def _torch():
    import torch

    torch.set_num_threads(n_threads())
    return torch


def _torch_runner(module, torch) -> Callable:
    module.eval()
    with_embeddings = hasattr(module, "forward_with_embeddings")

    def run(batch: np.ndarray):
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            out = module.forward_with_embeddings(x) if with_embeddings else module(x)
        embeddings = None
        if isinstance(out, (tuple, list)):
            if len(out) > 1 and isinstance(out[1], torch.Tensor):
                embeddings = out[1].detach().float().numpy()
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"The model returned {type(out).__name__}, expected a tensor of class scores.")
        return out.detach().float().numpy(), embeddings

    return run


def _load_torchscript(path: str):
    torch = _torch()
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; users still have such files
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        raise ModelError(ERROR_MODEL_LOAD_FAILED.format(kind="TorchScript", file=path, reason=one_line(exc)),
                         source=path) from exc
    return _torch_runner(module, torch)


def _load_onnx(path: str, preprocessing: Preprocessing, source: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(ERROR_MODEL_LOAD_FAILED.format(kind="ONNX", file=path, reason=one_line(exc)), source=path) from exc
    model_input = session.get_inputs()[0]
    shape = list(model_input.shape)
    if len(shape) == 4 and all(isinstance(v, int) for v in shape[2:]) \
            and tuple(shape[2:]) != tuple(preprocessing.input_size):
        raise ModelError(ERROR_MODEL_INPUT_SIZE.format(file=path, model_size=tuple(shape[2:]), source=source,
                                                       size=tuple(preprocessing.input_size)), source=path)
    fixed_batch = shape[0] if shape and isinstance(shape[0], int) else None
    input_name = model_input.name

    def run_once(batch: np.ndarray):
        outputs = session.run(None, {input_name: batch})
        embeddings = outputs[1] if len(outputs) > 1 and np.ndim(outputs[1]) == 2 else None
        return outputs[0], embeddings

    if fixed_batch != 1:
        return run_once

    def run_one_by_one(batch: np.ndarray):  # graphs exported with a fixed batch of 1
        parts = [run_once(batch[i:i + 1]) for i in range(len(batch))]
        scores = np.concatenate([p[0] for p in parts])
        embeddings = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
        return scores, embeddings

    return run_one_by_one


def _load_state_dict(path: str, arch: str | None):
    from audit.model.architectures import ARCHITECTURES, get_architecture

    if arch is None:
        raise ModelError(ERROR_MODEL_NEEDS_ARCH.format(file=path, known=", ".join(sorted(ARCHITECTURES))),
                         source=path)
    architecture = get_architecture(arch)
    torch = _torch()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        reason = f"it refers to {found.group(1)}" if found else "rejected by torch.load(weights_only=True)"
        raise ModelError(ERROR_MODEL_PICKLED_CODE.format(file=path, reason=reason), source=path) from exc
    except Exception as exc:
        raise ModelError(ERROR_MODEL_LOAD_FAILED.format(kind="checkpoint", file=path, reason=one_line(exc)),
                         source=path) from exc
    state = checkpoint
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(ERROR_MODEL_NOT_STATE_DICT.format(file=path, found=type(state).__name__), source=path)
    # Checkpoints saved from nn.DataParallel carry a "module." prefix on every key.
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    module = architecture.build()
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = str(exc).strip().splitlines()
        detail = detail[1].strip() if len(detail) > 1 else detail[0]
        raise ModelError(ERROR_MODEL_KEYS_MISMATCH.format(file=path, arch=arch, detail=detail[:300]),
                         source=path) from exc
    # Old checkpoints have no BatchNorm num_batches_tracked buffers; nothing else may be missing.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected key(s), e.g. "
                         + ", ".join(result.unexpected_keys[:3]))
        raise ModelError(ERROR_MODEL_KEYS_MISMATCH.format(file=path, arch=arch, detail="; ".join(parts)),
                         source=path)
    return _torch_runner(module, torch)


def load_model(path: str | os.PathLike, *, arch: str | None = None, preprocess_file: str | os.PathLike | None = None,
               class_map_file: str | os.PathLike | None = None) -> LoadedModel:
    """Load a model file for inference on CPU.

    Parameters
    ----------
    path : path
        TorchScript, ONNX or a state_dict checkpoint (the kind is read from the content).
    arch : str, optional
        A registered architecture (:data:`audit.model.architectures.ARCHITECTURES`); required for a
        checkpoint, and supplies default preprocessing and class names.
    preprocess_file : path, optional
        A sidecar JSON that overrides the one beside the model and the ``arch`` default.
    class_map_file : path, optional
        CSV ``model_class,dataset_class`` (see :func:`load_class_map`).

    Returns
    -------
    LoadedModel
        ``classes`` come from the preprocessing, else from the ``arch`` default, else None.
    """
    source = str(path)
    kind = detect_model_kind(path)
    preprocessing, preprocessing_source = resolve_preprocessing(preprocess_file=preprocess_file,
                                                                model_path=path, arch=arch)
    classes = preprocessing.classes
    if classes is None and arch is not None:
        from audit.model.architectures import get_architecture

        classes = get_architecture(arch).default_preprocessing.classes
    if kind == KIND_TORCHSCRIPT:
        run = _load_torchscript(source)
    elif kind == KIND_ONNX:
        run = _load_onnx(source, preprocessing, preprocessing_source)
    else:
        run = _load_state_dict(source, arch)
    class_map = load_class_map(class_map_file) if class_map_file is not None else None
    return LoadedModel(path=source, kind=kind, sha256=file_sha256(path), preprocessing=preprocessing,
                       preprocessing_source=preprocessing_source, classes=classes, arch=arch,
                       class_map=class_map, _run=run)


def iter_predictions(images: Iterable[tuple[np.ndarray, list[np.ndarray]]], model: LoadedModel, *,
                     batch_size: int = 256, progress: Callable[[int], Any] | None = None
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Preprocess and run decoded images in batches.

    Parameters
    ----------
    images : iterable of (indices, list of images)
        Chunks as produced by the image loader: ``indices`` (int array, e.g. table rows) and the decoded
        ``(H, W, 3)`` uint8 RGB images, same length. Chunks larger than ``batch_size`` are split.
    model : LoadedModel
    batch_size : int
        Images per model call.
    progress : callable, optional
        Called with the number of images just processed after every batch (``tqdm(...).update`` fits).

    Yields
    ------
    (indices, probabilities, embeddings)
        ``indices`` as given; ``probabilities`` ``(n, K)`` float32 in model class order;
        ``embeddings`` ``(n, D)`` float32 or None.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    for indices, chunk in images:
        indices = np.asarray(indices)
        if len(indices) != len(chunk):
            raise ValueError(f"chunk has {len(indices)} indices but {len(chunk)} images")
        for start in range(0, len(chunk), batch_size):
            stop = start + batch_size
            batch = preprocess_batch(chunk[start:stop], model.preprocessing)
            probabilities, embeddings = model.predict(batch)
            if progress is not None:
                progress(len(batch))
            yield indices[start:stop], probabilities, embeddings


def load_class_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a class map CSV with header ``model_class,dataset_class``: ``{model_class: dataset_class}``.

    Several model classes may map to the same data set class (their probabilities are summed); a model
    class may appear only once. Rows are numbered from 0 after the header in messages.
    """
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ModelError(ERROR_CLASS_MAP_UNREADABLE.format(file=source, reason=one_line(exc)), source=source) from exc
    header = [cell.strip() for cell in rows[0]] if rows else []
    if header != ["model_class", "dataset_class"]:
        raise ModelError(ERROR_CLASS_MAP_HEADER.format(file=source, found=",".join(header) or "an empty file"),
                         source=source)
    mapping: dict[str, str] = {}
    for row_number, row in enumerate(rows[1:]):
        if not any(cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row] + ["", ""]
        for column, value in zip(("model_class", "dataset_class"), cells):
            if not value:
                raise ModelError(ERROR_CLASS_MAP_EMPTY_VALUE.format(row=row_number, file=source, column=column),
                                 source=source, row=row_number, column=column)
        if cells[0] in mapping:
            raise ModelError(ERROR_CLASS_MAP_DUPLICATE.format(row=row_number, file=source, name=cells[0]),
                             source=source, row=row_number, column="model_class")
        mapping[cells[0]] = cells[1]
    return mapping


def _short(names) -> str:
    names = list(names)
    return ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")


def align_to_dataset(probabilities: np.ndarray, *, model_classes, dataset_classes,
                     class_map: dict | None) -> np.ndarray:
    """Re-express model probabilities in the data set's class order.

    Without ``class_map`` each model class must be a data set class of the same name; with it, each
    model class goes to ``class_map[model_class]``. Probabilities of several model classes mapped to one
    data set class are summed.

    Returns
    -------
    numpy.ndarray
        ``(n, len(dataset_classes))`` float32.

    Raises
    ------
    ModelError
        when the output width differs from the number of model classes, a model class maps to nothing, a
        data set class receives nothing, or the class map names classes that do not exist.
    """
    if model_classes is None:
        raise ModelError(ERROR_NO_MODEL_CLASSES)
    model_classes = tuple(model_classes)
    dataset_classes = tuple(dataset_classes)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(model_classes):
        k = probabilities.shape[1] if probabilities.ndim == 2 else probabilities.shape
        shown = ", ".join(model_classes[:10]) + (", ..." if len(model_classes) > 10 else "")
        raise ModelError(ERROR_ALIGN_N_CLASSES.format(k=k, n=len(model_classes), classes=shown))
    dataset_index = {name: i for i, name in enumerate(dataset_classes)}
    if class_map is not None:
        for name, target in class_map.items():
            if name not in model_classes:
                raise ModelError(ERROR_CLASS_MAP_UNKNOWN_MODEL_CLASS.format(name=name, model=_short(model_classes)),
                                 column="model_class")
            if target not in dataset_index:
                raise ModelError(ERROR_CLASS_MAP_UNKNOWN_DATASET_CLASS.format(
                    model_class=name, name=target, dataset=_short(dataset_classes)), column="dataset_class")
    target_of = class_map if class_map is not None else {name: name for name in model_classes}
    columns = np.empty(len(model_classes), dtype=np.int64)
    for i, name in enumerate(model_classes):
        target = target_of.get(name)
        if target not in dataset_index:
            raise ModelError(ERROR_MODEL_CLASS_UNMAPPED.format(name=name, dataset=_short(dataset_classes)),
                             column="model_class")
        columns[i] = dataset_index[target]
    received = set(columns.tolist())
    for j, name in enumerate(dataset_classes):
        if j not in received:
            raise ModelError(ERROR_DATASET_CLASS_UNMAPPED.format(name=name, model=_short(model_classes)),
                             column="dataset_class")
    if class_map is None and np.array_equal(columns, np.arange(len(dataset_classes))):
        return probabilities
    # One-hot (model class -> data set class) matrix: the product sums merged classes.
    onehot = np.zeros((len(model_classes), len(dataset_classes)), dtype=np.float64)
    onehot[np.arange(len(model_classes)), columns] = 1.0
    return (probabilities.astype(np.float64) @ onehot).astype(np.float32)


def resolve_preprocessing(*, preprocess_file: str | os.PathLike | None,
                          model_path: str | os.PathLike | None,
                          arch: str | None) -> tuple[Preprocessing, str]:
    """Pick the preprocessing by precedence: ``--preprocess`` > sidecar beside the model > ``--arch`` default.

    Returns
    -------
    (Preprocessing, str)
        The preprocessing and where it came from, e.g. ``"--preprocess /x/p.json"``,
        ``"sidecar /x/model.json"`` or ``"--arch cifar_resnet20 default"``.
    """
    if preprocess_file is not None:
        return load_sidecar(preprocess_file), f"--preprocess {Path(preprocess_file).resolve()}"
    if model_path is not None:
        sidecar = find_sidecar(model_path)
        if sidecar is not None:
            return load_sidecar(sidecar), f"sidecar {sidecar.resolve()}"
    if arch is not None:
        from audit.model.architectures import get_architecture  # late: pulls in torch

        return get_architecture(arch).default_preprocessing, f"--arch {arch} default"
    model = str(model_path) if model_path is not None else "<none>"
    stem = Path(model_path).stem if model_path is not None else "<model>"
    raise ModelError(ERROR_NO_PREPROCESSING.format(model=model, stem=stem), source=model)
