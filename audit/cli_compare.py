"""``python -m audit compare OLD NEW --out DIR [--policy FILE] [--format md]``.

Reads two audit folders (no model is re-run), writes a comparison folder (``comparison.json`` +
``image_changes.parquet``) and prints the findings (or, with ``--format md``, a pull-request comment).
With ``--policy`` the ``[regression]`` checks are evaluated and recorded; the exit code stays 0 (use
``gate NEW --baseline OLD --policy FILE`` to gate a release).
"""
from __future__ import annotations

import sys


def add_parser(subparsers) -> None:
    """Register ``compare`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "compare", help="compare two audit folders (OLD -> NEW): data, labels, model, with verdicts",
        description="Compare two audits of a data set (and its model): images added, removed, relabelled, "
                    "replaced; class and group shares; label disagreement; model metrics per group and class "
                    "with intervals and regressed/improved verdicts; duplicates across versions.")
    parser.add_argument("old", metavar="OLD", help="the earlier audit folder")
    parser.add_argument("new", metavar="NEW", help="the later audit folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="comparison folder to write")
    parser.add_argument("--policy", default=None, metavar="FILE",
                        help="TOML policy: its [regression] metric sets the primary metric and its checks are "
                             "recorded in comparison.json")
    parser.add_argument("--format", default="text", choices=("text", "md"),
                        help="what to print: a short text summary or Markdown for a pull request")
    parser.add_argument("--pairing", default="auto", choices=("auto", "paired", "unpaired"),
                        help="auto: paired tests on the images both audits score, when they are at least half "
                             "of NEW's; else unpaired")
    parser.add_argument("--n-bootstrap", type=int, default=1000, metavar="B",
                        help="bootstrap replicates for intervals of differences (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    parser.set_defaults(handler=command_compare)


def command_compare(args) -> int:
    from audit.compare.folder import check_out_folder, compare_folders, write_comparison_folder
    from audit.compare.gate import regression_policy, record_regression

    check_out_folder(args.out, args.old, args.new)
    policy = regression_policy(args.policy) if args.policy else None
    result = compare_folders(args.old, args.new, primary_metric=(policy or {}).get("metric"),
                             n_bootstrap=args.n_bootstrap, seed=args.seed, pairing=args.pairing)
    comparison = result.comparison
    if policy is not None:
        comparison = record_regression(comparison, policy, policy_file=args.policy)
    folder = write_comparison_folder(args.out, comparison, result.image_changes)
    if args.format == "md":
        from audit.compare.render import render_comparison_markdown

        print(render_comparison_markdown(comparison))
    else:
        print(render_summary(comparison, folder))
    return 0


def render_summary(comparison: dict, folder) -> str:
    counts = comparison["matching"]["counts"]
    lines = [f"comparison written to {folder}",
             f"  OLD {comparison['old']['path']} ({comparison['old']['n_images']} images) -> "
             f"NEW {comparison['new']['path']} ({comparison['new']['n_images']} images)",
             "  " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
             f"  model comparison: {comparison['model']['method']}"]
    for finding in comparison["findings"][:8]:
        lines.append(f"  - {finding}")
    if comparison.get("verdict"):
        lines.append(f"  regression verdict: {comparison['verdict']['status']}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m audit compare OLD NEW --out DIR")
