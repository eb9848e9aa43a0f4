"""``python -m audit review DIR --sample N | --import FILE.csv | --status`` (issue 13 item 2).

- ``--sample N [--seed S] [--policy FILE] --out FILE.csv``: draw (or extend) the audit's stratified random
  review sample and write ``id,path,label,suggested_label,stratum`` for reviewers.
- ``--import FILE.csv --reviewer NAME``: decisions ``id,decision,new_label[,note]`` into ``reviews.sqlite``,
  all or nothing.
- ``--status [--json FILE]``: the verified label-error rate with its interval, per group and per class.

Thin: the work is in :mod:`audit.review_sample` and :mod:`audit.reviews`.
"""
from __future__ import annotations

import json

ERROR_SAMPLE_NEEDS_OUT = "review --sample needs --out FILE.csv (where to write the sample for reviewers)"
ERROR_IMPORT_NEEDS_REVIEWER = "review --import needs --reviewer NAME (it is recorded with every decision)"
ERROR_ONE_MODE = "review needs exactly one of --sample N, --import FILE.csv or --status"
MESSAGE_IMPORTED = "imported {n} decision(s) by {reviewer} into {file}"


def add_parser(subparsers) -> None:
    """Register ``review`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "review", help="random review sample -> verified label-error rate (sample, import decisions, status)",
        description="Verify label errors with people: draw a stratified random sample of the audit's images "
                    "(--sample), import reviewers' decisions (--import), and estimate the data set's label-error "
                    "rate with its interval (--status). The model-label disagreement rate is a screening figure; "
                    "this is the verified one.")
    parser.add_argument("dir", metavar="DIR", help="audit folder written by run or label-noise")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sample", type=int, default=None, metavar="N",
                      help="draw (or extend to) a random sample of N images, stratified by the disagreement screen "
                           "(flagged / not flagged); a larger N later extends the same sample")
    mode.add_argument("--import", dest="import_file", default=None, metavar="FILE.csv",
                      help="CSV id,decision,new_label[,note] (decision label_wrong|label_correct|unsure; new_label "
                           "only with label_wrong); every row is checked first, nothing is imported on any error")
    mode.add_argument("--status", action="store_true", help="print the verified label-error rate")
    parser.add_argument("--seed", type=int, default=None, metavar="S",
                        help="seed of the sample (default 0; an existing sample keeps its seed)")
    parser.add_argument("--policy", default=None, metavar="FILE",
                        help="with --sample: also stratify by the groups of the policy's [label_noise] attributes")
    parser.add_argument("--out", default=None, metavar="FILE.csv",
                        help="with --sample: the CSV to write (id,path,label,suggested_label,stratum)")
    parser.add_argument("--reviewer", default=None, metavar="NAME", help="with --import: who decided")
    parser.add_argument("--json", default=None, metavar="FILE", help="with --status: also write the status as JSON")
    parser.set_defaults(handler=command_review)


def command_review(args) -> int:
    from audit.errors import InputError

    __import__("audit.compare.folder").compare.folder.check_is_audit(args.dir, role="DIR")
    if args.sample is not None:
        if not args.out:
            raise InputError(ERROR_SAMPLE_NEEDS_OUT)
        return _sample(args)
    if args.import_file is not None:
        if not (args.reviewer or "").strip():
            raise InputError(ERROR_IMPORT_NEEDS_REVIEWER)
        return _import(args)
    return _status(args)


def _sample(args) -> int:
    from audit.io.csv_export import write_safe_csv
    from audit.review_sample import request_review_sample

    attributes = ()
    if args.policy:
        from audit.policy import load_policy

        attributes = load_policy(args.policy).label_noise_attributes or ()
    request = request_review_sample(args.dir, args.sample, seed=args.seed, attributes=attributes)
    write_safe_csv(request.csv, args.out)
    for note in request.notes:
        print(note)
    counts = request.csv["stratum"].value_counts()
    print(f"wrote {len(request.csv)} image(s) to {args.out} (strata: "
          + ", ".join(f"{name} {int(counts.get(name, 0))} of {size}" for name, size in request.sample.strata.items())
          + "); review them in this order")
    return 0


def _import(args) -> int:
    from pathlib import Path

    from audit.folder import load_audit_json, load_images
    from audit.reviews import REVIEWS_FILE, read_review_csv, record_decisions

    audit = load_audit_json(args.dir)
    images = load_images(args.dir)
    rows = read_review_csv(args.import_file, images=images, classes=audit.get("classes") or None,
                           reviewer=args.reviewer)
    record_decisions(args.dir, rows)
    print(MESSAGE_IMPORTED.format(n=len(rows), reviewer=args.reviewer.strip(), file=Path(args.dir) / REVIEWS_FILE))
    return 0


def render_status(status: dict) -> str:
    """The lines ``review --status`` prints."""
    rate = status["label_error_rate"]
    lines = []
    if rate["estimate"] is not None:
        lines.append(f"verified label-error rate: {rate['estimate']:.2%} ({rate['confidence']:.0%} CI "
                     f"{rate['ci_low']:.2%} - {rate['ci_high']:.2%}), from {rate['reviewed']} reviewed images of a "
                     f"random sample of {rate['sample_size']} ({status['n_images']} images in the audit)")
    else:
        lines.append("verified label-error rate: not available yet")
    lines.append(f"confirmed label errors: {rate['confirmed_errors']} "
                 f"({status['confirmed_errors_outside_sample']} outside the random sample: they set a lower bound of "
                 f"{(status['confirmed_error_rate_lower_bound'] or 0):.2%}, never the estimate)")
    for stratum in status.get("strata", []):
        lines.append(f"  stratum {stratum['stratum']}: {stratum['n_images']} images, {stratum['sample_size']} sampled, "
                     f"{stratum['reviewed']} reviewed, {stratum['confirmed_errors']} "
                     f"error{'' if stratum['confirmed_errors'] == 1 else 's'}")
    if status.get("sample_unsure") or status.get("sample_conflicts"):
        lines.append(f"  left out: {status['sample_unsure']} unsure, {status['sample_conflicts']} in conflict")
    if status.get("reviews_to_halve_interval"):
        lines.append(f"about {status['reviews_to_halve_interval']} more reviews (in sample order) would halve the "
                     f"interval")
    for row in status.get("by_class", []):
        if row["estimate"] is not None:
            lines.append(f"  class {row['class']}: {row['estimate']:.2%} ({row['ci_low']:.2%} - {row['ci_high']:.2%}), "
                         f"{row['reviewed']} reviewed")
    for row in status.get("by_group", []):
        if row["estimate"] is not None:
            lines.append(f"  {row['attribute']} = {row['group']}: {row['estimate']:.2%} ({row['ci_low']:.2%} - "
                         f"{row['ci_high']:.2%}), {row['reviewed']} reviewed")
    if status.get("label_disagreement_rate") is not None:
        lines.append(f"model-label disagreement rate: {status['label_disagreement_rate']:.2%} (a screening figure: "
                     f"the model's own errors count too; not a label-error rate)")
    if status.get("message"):
        lines.append(status["message"])
    return "\n".join(lines)


def _status(args) -> int:
    from audit.io.atomic import write_text_atomic
    from audit.review_sample import load_review_status

    status = load_review_status(args.dir)
    print(render_status(status))
    if args.json:
        write_text_atomic(args.json, json.dumps(status, indent=2, allow_nan=False) + "\n")
    return 0
