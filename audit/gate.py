"""``python -m audit gate DIR --policy FILE``: check an existing audit against a policy; exit 0 / 1 / 2.

The verdict is evaluated afresh from the folder's ``audit.json`` and ``group_metrics.parquet`` with the given
policy (the verdict recorded by ``run --policy``, if any, is not reused). Exit codes (contract): 0 PASS
(warnings listed), 1 FAIL (with ``--strict`` also INSUFFICIENT_EVIDENCE), 2 ERROR (an analysis a check needs
failed) or bad input (raised as :class:`~audit.errors.InputError` for the CLI to print).
"""
from __future__ import annotations

import os
import sys
from typing import TextIO

from audit.errors import InputError
from audit.policy import (ERROR, PASS, STATUS_MARK, STATUS_ORDER, Verdict, evaluate_policy, exit_code, load_policy,
                          status_rank)

ERROR_OUTPUT_FORMAT = "--format must be text or md, got {value!r}"
ERROR_JSON_IS_DIR = "--json {path} is a folder; give a file name (e.g. {path}/verdict.json)"
ERROR_JSON_NOT_WRITABLE = "cannot write the verdict to --json {path} ({reason}); give a file in a folder you can write to"
#: The one line on stderr when the verdict is ERROR (exit code 2), besides the table on stdout.
MESSAGE_VERDICT_ERROR = ("gate: verdict ERROR for {folder}: {n} check(s) could not be evaluated; first: {name}: "
                         "{message}")



def _value(value) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}"
    return "0" if text in ("-0", "0") else text  # a drop of -0.0 reads "0", never "-0"


def _summary_counts(verdict: Verdict) -> str:
    parts = [f"{verdict.count(s)} {s}" for s in STATUS_ORDER if verdict.count(s)]  # the one status order
    return ", ".join(parts) if parts else "no checks"


def _where(check) -> str:
    parts = []
    if check.attribute and check.attribute != "all":
        parts.append(f"{check.attribute} = {check.group}" if check.group else check.attribute)
    if check.class_:
        parts.append(f"class {check.class_}")
    return ", ".join(parts)


def render_gate_text(verdict: Verdict, *, folder: str = "", policy_file: str = "") -> str:
    """A fixed-width table: status, check, where, value, threshold; then the messages of non-PASS rows."""
    header = ("STATUS", "CHECK", "WHERE", "VALUE", "THRESHOLD")
    rows = [(c.status, c.name, _where(c), _value(c.value), _value(c.threshold)) for c in verdict.checks]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    widths[2] = min(widths[2], 48)
    lines = [f"imagefair gate: {folder}" + (f" against {policy_file}" if policy_file else "")]

    def line(row):
        cells = [str(cell)[:widths[i]].ljust(widths[i]) for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    lines.append(line(header))
    lines.extend(line(r) for r in rows)
    notes = [c for c in verdict.checks if c.status != PASS]
    if notes:
        lines.append("")
        lines.extend(f"{c.status} {c.name}{' [' + _where(c) + ']' if _where(c) else ''}: {c.message}" for c in notes)
    lines.append("")
    strict = " (strict: INSUFFICIENT_EVIDENCE fails)" if verdict.strict else ""
    lines.append(f"verdict: {verdict.status}{strict} ({_summary_counts(verdict)})")
    return "\n".join(lines)


def _md_cell(text) -> str:
    """Markdown table cell: no pipes, newlines, HTML tags, links or mentions from user data (the report's rule)."""
    from audit.report.markdown import md

    return md(text)


def _md_code(text) -> str:
    from audit.report.markdown import code

    return code(text)


def render_gate_markdown(verdict: Verdict, *, folder: str = "", policy_file: str = "") -> str:
    """A pull-request comment: headline verdict, counts, the table of checks (problems first)."""
    checks = sorted(verdict.checks, key=lambda c: status_rank(c.status))
    lines = [f"### imagefair release gate: {STATUS_MARK.get(verdict.status, '')} **{verdict.status}**", ""]
    context = f"Audit `{_md_code(folder)}`" + (f", policy `{_md_code(policy_file)}`" if policy_file else "")
    lines.append(f"{context}: {_summary_counts(verdict)}"
                 + (" (strict mode: INSUFFICIENT_EVIDENCE fails the gate)." if verdict.strict else "."))
    lines.append("")
    if checks:
        lines.append("| status | check | where | value | threshold | details |")
        lines.append("|---|---|---|---:|---:|---|")
        for c in checks:
            lines.append(f"| {STATUS_MARK.get(c.status, '')} {c.status} | `{c.name}` | {_md_cell(_where(c))} | "
                         f"{_value(c.value)} | {_value(c.threshold)} | {_md_cell(c.message)} |")
    else:
        lines.append("The policy asks for no checks.")
    return "\n".join(lines) + "\n"


def run_gate(folder: str | os.PathLike, *, policy_file: str | os.PathLike, output_format: str = "text",
             json_file: str | os.PathLike | None = None, strict: bool = False, stream: TextIO | None = None,
             allow_empty: bool = False) -> int:
    """Evaluate ``policy_file`` on the audit in ``folder``, print the table, return the exit code.

    Parameters
    ----------
    folder : path
        An audit folder (``audit.json`` + ``group_metrics.parquet``).
    policy_file : path
        TOML policy (see ``policy.example.toml``).
    output_format : {"text", "md"}
        A plain table for a terminal or a Markdown summary for a pull request.
    json_file : path, optional
        Also write the verdict object (contract) there, atomically.
    strict : bool
        INSUFFICIENT_EVIDENCE fails the gate.
    allow_empty : bool
        Accept a policy without any check (PASS). Otherwise such a policy (empty, truncated, settings only)
        is :data:`audit.policy.ERROR_EMPTY_POLICY` (exit 2).
    stream : file, optional
        Where to print (default stdout).

    Returns
    -------
    int
        0 PASS, 1 FAIL, 2 ERROR.

    Raises
    ------
    InputError, PolicyError
        Missing/corrupt audit folder or a bad policy (the CLI prints one line and exits 2).
    """
    from audit.folder import load_audit_json, load_group_metrics

    if output_format not in ("text", "md"):
        raise ValueError(ERROR_OUTPUT_FORMAT.format(value=output_format))
    if json_file is not None and os.path.isdir(json_file):
        raise InputError(ERROR_JSON_IS_DIR.format(path=json_file), source=str(json_file))
    policy = load_policy(policy_file)
    from audit.policy import ERROR_EMPTY_POLICY, ERROR_ONLY_REGRESSION, POLICY_KEYS, PolicyError, policy_checks

    if not allow_empty and not policy_checks(policy, sections=set(POLICY_KEYS) - {"regression"}):
        # without --baseline the [regression] checks are all SKIPPED: such a gate would check nothing either
        message = ERROR_ONLY_REGRESSION if policy_checks(policy, sections={"regression"}) else ERROR_EMPTY_POLICY
        raise PolicyError(message.format(path=policy_file), source=str(policy_file))
    audit = load_audit_json(folder)
    group_metrics = load_group_metrics(folder)
    verdict = evaluate_policy(audit, group_metrics, policy, strict=strict, reviews=review_status(folder, policy))
    render = render_gate_markdown if output_format == "md" else render_gate_text
    print(render(verdict, folder=str(folder), policy_file=str(policy_file)), file=stream or sys.stdout)
    if json_file is not None:
        from audit.io.atomic import write_json_atomic

        try:
            write_json_atomic(json_file, verdict.to_dict())
        except OSError as error:
            raise InputError(ERROR_JSON_NOT_WRITABLE.format(path=json_file,
                                                            reason=error.strerror or type(error).__name__),
                             source=str(json_file)) from error
    if verdict.status == ERROR:
        # exit code 2 comes with one line on stderr (contract); the table above says the rest
        errors = [c for c in verdict.checks if c.status == ERROR]
        first = errors[0] if errors else None
        print(MESSAGE_VERDICT_ERROR.format(folder=folder, n=len(errors), name=first.name if first else "-",
                                           message=" ".join(str(first.message).split()) if first else "-"),
              file=sys.stderr)
    return exit_code(verdict.status)


def review_status(folder, policy) -> dict | None:
    """The verified label-error rate of the folder when the policy judges it (``review --status``), else None.
    An unreadable ``reviews.sqlite`` gives None: the checks then say the status was not read."""
    import sqlite3

    import pandas as pd

    from audit.policy import needs_review_status

    if not needs_review_status(policy):
        return None
    from audit.review_sample import load_review_status

    try:
        return load_review_status(folder, group_attributes=None)
    except (sqlite3.Error, pd.errors.DatabaseError):
        return None
