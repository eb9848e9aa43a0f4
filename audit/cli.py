"""Command line: ``python -m audit run | label-noise | report | gate | compare | review | cache`` (also installed as
``imagefair``).

Exit codes (contract): 0 success, 1 policy failed (gate), 2 bad input or error, with one clear line on
stderr. A run whose analyses partly failed still exits 0 and lists them in ``audit.json`` ``errors``.
Set ``IMAGEFAIR_DEBUG=1`` to see the traceback of an unexpected error.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

EXIT_OK = 0
EXIT_POLICY_FAILED = 1
EXIT_ERROR = 2

ERROR_OUT_OF_MEMORY = ("error: out of memory: the data set does not fit this machine; for label noise alone use "
                       "`label-noise` with an .npy of probabilities, which streams")
ERROR_INTERNAL = ("internal error: {error} (this is a bug in imagefair; rerun with IMAGEFAIR_DEBUG=1 for details "
                  "and report it)")


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagefair",
        description="Audit an image-classification dataset and a pretrained model for bias, fairness and label "
                    "quality. Every command reads or writes audit folders (see docs/audit-folder.md).")
    from audit import __version__

    parser.add_argument("--version", action="version", version=f"imagefair {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="audit images + labels (+ attributes, + a model) into an audit folder",
                              description="Audit a dataset (and optionally a model) and write the audit folder.")
    data = run.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="PATH",
                      help="an ImageFolder root (root/<class>/* or root/<split>/<class>/*) or a CSV/Parquet "
                           "manifest with a path column (relative to the manifest) and a label column")
    data.add_argument("--out", required=True, metavar="DIR", help="audit folder to write (created if missing; "
                      "other files in it are kept)")
    data.add_argument("--data-root", default=None, metavar="DIR",
                      help="read images only from inside DIR (after symlinks); default: read every path the "
                           "manifest names, absolute paths and symlinks included")
    data.add_argument("--label-column", default="label", metavar="COL", help="manifest column with the class "
                      "name (default: label)")
    data.add_argument("--group-by", type=_comma_list, default=None, metavar="COL,...",
                      help="attribute columns to analyse as groups (default: every non-reserved column with at "
                           "most 50 distinct values)")
    data.add_argument("--attributes", default=None, metavar="FILE",
                      help="CSV/Parquet attribute table joined to the data by id (or path)")
    data.add_argument("--reference", default=None, metavar="FILE",
                      help="CSV attribute,group,expected_share: reference proportions to compare group shares with")
    _add_annotation_options(run)
    model = run.add_argument_group("model (optional: give --model or --predictions)")
    model.add_argument("--model", default=None, metavar="FILE",
                       help="TorchScript (.pt), ONNX (.onnx) or state_dict checkpoint (with --arch)")
    model.add_argument("--arch", default=None, metavar="NAME",
                       help="registered architecture of a state_dict checkpoint (cifar_resnet20/32/44/56)")
    model.add_argument("--preprocess", default=None, metavar="FILE",
                       help="model.json sidecar with classes and preprocessing (overrides the one beside the model)")
    model.add_argument("--class-map", default=None, metavar="FILE",
                       help="CSV model_class,dataset_class where the model's class names differ from the data's")
    model.add_argument("--predictions", default=None, metavar="FILE",
                       help="CSV/Parquet with an id or path column and one column per class, or NPY (N, K) in "
                            "manifest row order")
    model.add_argument("--predictions-kind", default="auto", choices=("auto", "probabilities", "logits"),
                       help="auto: rows in [0, 1] summing to 1 are probabilities, anything else logits")
    settings = run.add_argument_group("settings")
    settings.add_argument("--policy", default=None, metavar="FILE", help="TOML policy: record a pass/fail verdict")
    settings.add_argument("--min-group-size", type=int, default=30, metavar="N",
                          help="groups with fewer images get insufficient_evidence (default 30)")
    settings.add_argument("--max-ci-width", type=float, default=0.3, metavar="W",
                          help="intervals wider than this get insufficient_evidence too (default 0.3)")
    settings.add_argument("--max-intersection-depth", type=int, default=2, choices=(1, 2, 3),
                          help="intersections of up to this many attributes (default 2)")
    settings.add_argument("--n-bootstrap", type=int, default=1000, metavar="B", help="bootstrap replicates (1000)")
    settings.add_argument("--seed", type=int, default=0, help="seed of every random step (0)")
    settings.add_argument("--correction", default="holm", choices=("holm", "bh"),
                          help="multiple-comparison control: holm (family-wise error) or bh (false discovery rate)")
    settings.add_argument("--label-noise-source", default="auto", choices=("auto", "model", "probe", "combined"),
                          help="probabilities that rank label suspects: auto (default: combined when the model gives "
                               "embeddings, else model), the model's, an out-of-sample logistic-regression probe on "
                               "its embeddings (for a model trained on this data), or the mean of the two; the "
                               "audit records which it used")
    settings.add_argument("--label-score", default="self_confidence", choices=("self_confidence", "normalized_margin"),
                          help="per-image label_score that ranks suspects: the given label's probability "
                               "(self_confidence) or its margin over the best other class (normalized_margin)")
    settings.add_argument("--cache-dir", default=None, metavar="DIR",
                          help="cache of per-image results, model outputs and analysis-step outputs (default "
                               "$IMAGEFAIR_CACHE_DIR or ~/.cache/imagefair)")
    settings.add_argument("--no-cache", action="store_true",
                          help="do not read or write the cache (per-image results, model outputs, analysis steps)")
    settings.add_argument("--quiet", action="store_true", help="no progress bars")
    scale = run.add_argument_group("execution (where the per-image stage runs; the same numbers everywhere)")
    scale.add_argument("--executor", default="local", choices=("local", "ray"),
                       help="local: worker processes on this machine (default); ray: Ray Data (pip install "
                            "'imagefair[ray]')")
    scale.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker processes / Ray actors (default: all cores; 1 = in this process)")
    scale.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                       help="join a running Ray cluster (`ray start --head`); default: start a local Ray instance")

    noise = commands.add_parser("label-noise", help="label-noise audit from labels + probabilities (no images)",
                                description="Screen labels by confident learning from labels and predicted "
                                            "probabilities (the model-label disagreement rate, with suspects "
                                            "ranked), and write an audit folder; `review` then gives the verified "
                                            "label-error rate.")
    noise.add_argument("--labels", required=True, metavar="FILE",
                       help="NPY of class indices, or CSV/Parquet with id,label")
    noise.add_argument("--predictions", default=None, metavar="FILE",
                       help="NPY (N, K) or CSV/Parquet with id and one column per class (may be left out with "
                            "--annotations: annotation quality alone)")
    noise.add_argument("--out", required=True, metavar="DIR",
                       help="audit folder to write (created if missing; other files in it are kept)")
    noise.add_argument("--classes", default=None, metavar="FILE",
                       help="text file, one class name a line, in the predictions' column order (default: "
                            "the CSV/Parquet column names, or 0..K-1 for NPY)")
    noise.add_argument("--attributes", default=None, metavar="FILE", help="CSV/Parquet with id and attribute columns")
    noise.add_argument("--predictions-kind", default="auto", choices=("auto", "probabilities", "logits"),
                       help="auto: rows in [0, 1] summing to 1 are probabilities, anything else logits")
    noise.add_argument("--min-group-size", type=int, default=30, metavar="N",
                       help="groups with fewer images get insufficient_evidence (default 30)")
    noise.add_argument("--policy", default=None, metavar="FILE", help="TOML policy: record a pass/fail verdict")
    _add_annotation_options(noise)

    report = commands.add_parser("report", help="render an audit folder as PDF, HTML or Markdown",
                                 description="Render the audit folder DIR as a PDF, HTML or Markdown report. The "
                                             "report re-reads the folder and computes nothing new.")
    report.add_argument("dir", metavar="DIR",
                        help="audit folder written by run or label-noise, or a comparison folder written by compare")
    report.add_argument("--format", required=True, choices=("pdf", "html", "md"),
                        help="pdf (needs Pango for WeasyPrint and Chromium for the charts), html (self-contained, "
                             "interactive charts) or md (text, no images)")
    report.add_argument("--out", default=None, metavar="FILE", help="default DIR/report.<ext>")
    report.add_argument("--no-thumbnails", action="store_true", help="leave out every image (no faces shown)")

    gate = commands.add_parser("gate", help="check an audit folder against a policy; exit 0 pass, 1 fail, 2 error",
                               description="Check the audit folder DIR against a policy file and exit 0 (PASS, "
                                           "warnings listed), 1 (FAIL) or 2 (ERROR or bad input): a release gate "
                                           "for CI. See policy.example.toml for the keys.")
    gate.add_argument("dir", metavar="DIR", help="audit folder written by run or label-noise")
    gate.add_argument("--policy", required=True, metavar="FILE", help="TOML policy (see policy.example.toml)")
    gate.add_argument("--format", default="text", choices=("text", "md"),
                      help="text for a terminal, md for a CI comment (default text)")
    gate.add_argument("--json", default=None, metavar="FILE", help="also write the verdict as JSON")
    gate.add_argument("--strict", action="store_true", help="INSUFFICIENT_EVIDENCE fails the gate too")
    gate.add_argument("--allow-empty", action="store_true",
                      help="accept a policy without checks (otherwise an error: it would pass anything)")
    gate.add_argument("--baseline", default=None, metavar="OLD",
                      help="an earlier audit folder: also run the policy's [regression] checks of DIR against it")
    __import__("audit.cli_compare").cli_compare.add_parser(commands)
    __import__("audit.cli_review").cli_review.add_parser(commands)
    __import__("audit.cli_cache").cli_cache.add_parser(commands)
    return parser


def _add_annotation_options(command) -> None:
    """``--annotations`` and ``--consensus`` (issue 16), shared by run and label-noise."""
    group = command.add_argument_group("annotations (several labels per image)")
    group.add_argument("--annotations", default=None, metavar="FILE",
                       help="CSV/Parquet of labels by several annotators: long id,annotator,label[,seconds] or wide "
                            "(id plus one column per annotator), joined by id (or path): consensus labels, annotator "
                            "reliability, agreement; with run, --label-column consensus audits the consensus")
    group.add_argument("--consensus", default="auto", choices=("auto", "majority", "dawid_skene", "crowdlab"),
                       help="consensus method: auto (crowdlab with a model or predictions, else dawid_skene), "
                            "majority vote, Dawid-Skene, or crowdlab (Dawid-Skene with the model as one more "
                            "annotator)")


def _progress_bar(quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bars.clear()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="img" if total > 1 else "", file=sys.stderr,
                                     leave=False, disable=None)
        bar.total = total
        bar.n = done
        bar.refresh()

    return progress


def _command_run(args) -> int:
    from audit.config import AuditConfig
    from audit.pipeline import run_audit
    from audit.folder import folder_lock, write_audit_folder

    config = AuditConfig(
        data=args.data, data_root=args.data_root, label_column=args.label_column, group_by=args.group_by,
        attributes_file=args.attributes,
        reference_file=args.reference, model=args.model, arch=args.arch, preprocess_file=args.preprocess,
        class_map_file=args.class_map, predictions=args.predictions, predictions_kind=args.predictions_kind,
        policy_file=args.policy, min_group_size=args.min_group_size, max_ci_width=args.max_ci_width,
        max_intersection_depth=args.max_intersection_depth, n_bootstrap=args.n_bootstrap, seed=args.seed,
        correction=args.correction, label_noise_source=args.label_noise_source,
        label_score_method=args.label_score, cache_dir=args.cache_dir,
        use_cache=not args.no_cache, annotations_file=args.annotations, consensus_method=args.consensus,
        executor=args.executor, workers=args.workers, ray_address=args.ray_address)
    with folder_lock(args.out):  # a second run into the same --out is refused at once
        result = run_audit(config, progress=_progress_bar(args.quiet))
        folder = write_audit_folder(args.out, audit=result.audit, images=result.images,
                                    group_metrics=result.group_metrics, probabilities=result.probabilities,
                                    annotators=result.extra.get("files", {}).get("annotators"))
    print(render_summary(result.audit, folder))
    return EXIT_OK


def render_summary(audit: dict, folder) -> str:
    """The few lines printed after a run: sizes, headline figures, findings, errors, where the files are."""
    dataset = audit["dataset"]
    lines = [f"audit written to {folder}",
             f"  images: {dataset['n_images']} ({dataset['n_skipped']} skipped), classes: {dataset['n_classes']}, "
             f"group attributes: {', '.join(dataset['group_attributes']) or 'none'}"]
    model = audit.get("model")
    if model:
        lines.append(f"  model: {model['kind']} {model.get('source', '')}"
                     + (f" (read as {model['predictions_kind']})" if model.get("predictions_kind") else "")
                     + (" (inference from cache)" if model.get("from_cache") else ""))
    for finding in audit.get("findings", [])[:6]:
        lines.append(f"  - {finding}")
    for error in audit.get("errors", []):
        lines.append(f"  ! analysis {error['analysis']} failed: {error['message']}")
    verdict = audit.get("verdict")
    if verdict:
        lines.append(f"  verdict: {verdict['status']}")
    return "\n".join(lines)


def _command_label_noise(args) -> int:
    from audit.pipeline.labels_input import run_label_noise_audit
    from audit.folder import folder_lock, write_audit_folder

    with folder_lock(args.out):  # a second run into the same --out is refused at once
        result = run_label_noise_audit(labels_file=args.labels, predictions_file=args.predictions,
                                       classes_file=args.classes, attributes_file=args.attributes,
                                       predictions_kind=args.predictions_kind, min_group_size=args.min_group_size,
                                       policy_file=args.policy, annotations_file=args.annotations,
                                       consensus_method=args.consensus)
        folder = write_audit_folder(args.out, audit=result.audit, images=result.images,
                                    group_metrics=result.group_metrics, probabilities=result.probabilities,
                                    annotators=result.extra.get("files", {}).get("annotators"))
    print(render_summary(result.audit, folder))
    return EXIT_OK


def _command_report(args) -> int:
    from audit.report.render import render_report

    path = render_report(args.dir, format=args.format, out=args.out, thumbnails=not args.no_thumbnails)
    print(f"report written to {path}")
    return EXIT_OK


def _command_gate(args) -> int:
    from audit.gate import run_gate

    __import__("audit.compare.folder").compare.folder.check_is_audit(args.dir, role="DIR")
    if getattr(args, "baseline", None):
        from audit.compare.gate import run_baseline_gate

        return run_baseline_gate(args.dir, baseline=args.baseline, policy_file=args.policy,
                                 output_format=args.format, json_file=args.json, strict=args.strict)
    return run_gate(args.dir, policy_file=args.policy, output_format=args.format, json_file=args.json,
                    strict=args.strict, allow_empty=args.allow_empty)


COMMANDS = {"run": _command_run, "label-noise": _command_label_noise, "report": _command_report,
            "gate": _command_gate}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m audit`` and ``imagefair``; returns the exit code."""
    from audit.errors import AuditError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # Library warnings (Pillow, torch, onnxruntime deprecations...) would break the promise of one clear
        # line on stderr; what matters to the user is in the summary, audit.json or the error line.
        # IMAGEFAIR_DEBUG=1 shows them.
        with warnings.catch_warnings():
            if not os.environ.get("IMAGEFAIR_DEBUG"):
                warnings.simplefilter("ignore")
            return (getattr(args, "handler", None) or COMMANDS[args.command])(args)
    except AuditError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        print(f"error: {where}{_one_line(error.strerror or error)}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(ERROR_OUT_OF_MEMORY, file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # noqa: BLE001 - never a raw traceback for the user
        if os.environ.get("IMAGEFAIR_DEBUG"):
            traceback.print_exc()
        print(ERROR_INTERNAL.format(error=_one_line(f"{type(error).__name__}: {error}")), file=sys.stderr)
        return EXIT_ERROR


def _one_line(text) -> str:
    """Collapse a message (possibly multi-line text from a third-party library) onto one line."""
    return " ".join(str(text).split())


def main_exit() -> None:
    """Console-script entry point (``imagefair``)."""
    sys.exit(main())
