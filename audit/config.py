"""Settings of one audit run (everything the CLI and the app can set)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

ERROR_MIN_GROUP_SIZE = "--min-group-size must be a positive integer, got {value!r}"
ERROR_CONFIDENCE_LEVEL = "confidence level must be strictly between 0 and 1, got {value!r}"
ERROR_MODEL_AND_PREDICTIONS = "give either --model or --predictions, not both"
ERROR_PREDICTIONS_KIND = "--predictions-kind must be auto, probabilities or logits, got {value!r}"
ERROR_LABEL_NOISE_SOURCE = "--label-noise-source must be auto, model, probe or combined, got {value!r}"
ERROR_LABEL_SCORE = "--label-score must be self_confidence or normalized_margin, got {value!r}"
ERROR_N_BOOTSTRAP = "--n-bootstrap must be an integer of at least 2, got {value!r}"
ERROR_MAX_CI_WIDTH = "--max-ci-width must be a number greater than 0 and at most 1, got {value!r}"
ERROR_FILE_MISSING = "{option} {path}: file not found"
ERROR_MAX_DEPTH = "--max-intersection-depth must be 1, 2 or 3, got {value!r}"
ERROR_CONSENSUS_METHOD = "--consensus must be auto, majority, dawid_skene or crowdlab, got {value!r}"
ERROR_CONSENSUS_NEEDS_ANNOTATIONS = "--label-column consensus needs --annotations FILE (the labels to take a consensus of)"
ERROR_CROWDLAB_NEEDS_MODEL = ("--consensus crowdlab weighs the annotators against the model's probabilities: give "
                              "--model or --predictions, or use --consensus dawid_skene")


@dataclass(frozen=True)
class AuditConfig:
    """Everything that decides an audit's numbers; recorded in ``provenance.settings``.

    Attributes
    ----------
    data : str
        ImageFolder root, or a CSV/Parquet manifest.
    data_root : str or None
        Confine image reads to this folder (``--data-root``); None reads absolute paths and symlinks wherever
        they point.
    label_column : str
        Manifest column holding the class name.
    group_by : tuple of str or None
        Group attributes; None = every non-reserved column with at most ``max_group_values`` values.
    attributes_file, reference_file : str or None
        Extra attribute table joined by id/path; reference proportions ``attribute,group,expected_share``.
    model, arch, preprocess_file, class_map_file : str or None
        Model file and how to read it (``contract.md``: model sidecar).
    predictions, predictions_kind : str or None, str
        A predictions file instead of a model.
    min_group_size : int
        Groups smaller than this are ``insufficient_evidence``.
    max_ci_width : float
        Intervals wider than this are ``insufficient_evidence`` too.
    confidence_level : float
        Coverage of every interval; the tests' level is ``1 - confidence_level``.
    max_intersection_depth : int
        1 = single attributes, 2 = also pairs (default), 3 = also triples.
    n_bootstrap, seed : int
        Bootstrap replicates and the seed of every random step.
    correction : str
        Multiple-comparison control: ``holm`` (family-wise) or ``bh`` (false discovery rate).
    label_noise_source : str
        Probabilities that rank label suspects (``audit.analysis.screening``): ``auto`` (default: ``combined``
        when the model gives embeddings, else ``model``); ``model`` = the model's probabilities; ``probe`` =
        out-of-sample probabilities of a K-fold logistic-regression probe on the model's embeddings;
        ``combined`` = the mean of the two.
    label_score_method : str
        Per-image ``label_score``: ``self_confidence`` (probability of the given label) or
        ``normalized_margin`` (that probability minus the largest other one, mapped to 0..1).
    max_pixels : int
        Images with more pixels are skipped (decompression-bomb guard).
    annotations_file : str or None
        Several labels per image (``--annotations``: long ``id,annotator,label[,seconds]`` or wide); with
        ``label_column="consensus"`` the consensus label is the label under audit.
    consensus_method : str
        ``auto`` (crowdlab with a model or predictions, else dawid_skene), ``majority``, ``dawid_skene`` or
        ``crowdlab``.
    cache_dir : str or None
        Where per-image results, model outputs and analysis-step outputs are cached (None =
        ``$IMAGEFAIR_CACHE_DIR`` or ``~/.cache/imagefair``); ``use_cache=False`` neither reads nor writes it.
    executor, workers, ray_address : str, int or None, str or None
        Where the per-image stage runs (``--executor local|ray``, ``--workers N`` (default: all cores),
        ``--ray-address auto|HOST:PORT``); every executor gives the same numbers.
    """

    data: str
    label_column: str = "label"
    group_by: tuple[str, ...] | None = None
    attributes_file: str | None = None
    reference_file: str | None = None
    model: str | None = None
    arch: str | None = None
    preprocess_file: str | None = None
    class_map_file: str | None = None
    predictions: str | None = None
    predictions_kind: str = "auto"
    policy_file: str | None = None
    min_group_size: int = 30
    max_ci_width: float = 0.3
    confidence_level: float = 0.95
    max_intersection_depth: int = 2
    n_bootstrap: int = 1000
    seed: int = 0
    correction: str = "holm"
    label_noise_source: str = "auto"
    label_score_method: str = "self_confidence"
    max_pixels: int = 40_000_000
    batch_size: int = 128
    cache_dir: str | None = None
    use_cache: bool = True
    annotations_file: str | None = None
    consensus_method: str = "auto"
    data_root: str | None = None
    executor: str = "local"
    workers: int | None = None
    ray_address: str | None = None

    def check(self) -> None:
        """Validate the settings; raise :class:`~audit.errors.InputError` naming the bad one."""
        from audit.errors import InputError

        if not isinstance(self.min_group_size, int) or self.min_group_size < 1:
            raise InputError(ERROR_MIN_GROUP_SIZE.format(value=self.min_group_size))
        if not isinstance(self.n_bootstrap, int) or isinstance(self.n_bootstrap, bool) or self.n_bootstrap < 2:
            raise InputError(ERROR_N_BOOTSTRAP.format(value=self.n_bootstrap))
        if not (isinstance(self.max_ci_width, (int, float)) and math.isfinite(self.max_ci_width)
                and 0 < self.max_ci_width <= 1):
            raise InputError(ERROR_MAX_CI_WIDTH.format(value=self.max_ci_width))
        for option, path in (("--reference", self.reference_file), ("--attributes", self.attributes_file),
                             ("--policy", self.policy_file), ("--class-map", self.class_map_file),
                             ("--preprocess", self.preprocess_file)):
            if path and not Path(path).is_file():
                raise InputError(ERROR_FILE_MISSING.format(option=option, path=path), source=str(path))
        if not 0 < self.confidence_level < 1:
            raise InputError(ERROR_CONFIDENCE_LEVEL.format(value=self.confidence_level))
        if self.model and self.predictions:
            raise InputError(ERROR_MODEL_AND_PREDICTIONS)
        if self.predictions_kind not in ("auto", "probabilities", "logits"):
            raise InputError(ERROR_PREDICTIONS_KIND.format(value=self.predictions_kind))
        if self.label_noise_source not in ("auto", "model", "probe", "combined"):
            raise InputError(ERROR_LABEL_NOISE_SOURCE.format(value=self.label_noise_source))
        if self.label_score_method not in ("self_confidence", "normalized_margin"):
            raise InputError(ERROR_LABEL_SCORE.format(value=self.label_score_method))
        if self.max_intersection_depth not in (1, 2, 3):
            raise InputError(ERROR_MAX_DEPTH.format(value=self.max_intersection_depth))
        if self.annotations_file and not Path(self.annotations_file).is_file():
            raise InputError(ERROR_FILE_MISSING.format(option="--annotations", path=self.annotations_file),
                             source=str(self.annotations_file))
        if self.consensus_method not in ("auto", "majority", "dawid_skene", "crowdlab"):
            raise InputError(ERROR_CONSENSUS_METHOD.format(value=self.consensus_method))
        if self.label_column == "consensus" and not self.annotations_file:
            raise InputError(ERROR_CONSENSUS_NEEDS_ANNOTATIONS)
        if self.consensus_method == "crowdlab" and not (self.model or self.predictions):
            raise InputError(ERROR_CROWDLAB_NEEDS_MODEL)

    def settings(self) -> dict:
        """The settings as recorded in ``provenance.settings`` (paths resolved to absolute strings)."""
        values = asdict(self)
        for key in ("data", "attributes_file", "reference_file", "model", "preprocess_file", "class_map_file",
                    "predictions", "policy_file", "annotations_file", "data_root"):
            if values[key]:
                values[key] = str(Path(values[key]).resolve())
        if values["group_by"] is not None:
            values["group_by"] = list(values["group_by"])
        return values
