"""Markdown report: a concise summary for a pull request (verdict, headline numbers, findings, worst groups)."""
from __future__ import annotations

# One escaping helper per output kind (audit/escaping.py): md/code are the Markdown ones, kept under these
# names for the report, the gate and the comparison summary; one mark per check status (audit.policy).
from audit.escaping import MARKDOWN_ESCAPED, markdown_code as code, markdown_text as md, markdown_text_code  # noqa: F401
from audit.policy import STATUS_MARK  # noqa: F401
from audit.report.document import Report


def render_markdown(report: Report, *, max_checks: int = 20) -> str:
    """The Markdown summary of ``report``."""
    s = report.sections
    cover = s["cover"]
    lines = ["## imagefair audit summary", ""]
    verdict = cover["verdict"]
    if verdict:
        lines.append(f"**Policy verdict: {STATUS_MARK.get(verdict, '')} {verdict}**")
    else:
        lines.append("No policy verdict recorded (use `python -m audit gate DIR --policy FILE`).")
    lines.append("")
    lines.append(f"- Dataset: `{code(cover['dataset'])}`: {cover['n_images']} images, {cover['n_classes']} classes, "
                 f"{cover['n_skipped']} inputs skipped")
    lines.append(f"- Model: {md(cover['model'])}")
    lines.append(f"- Audit date: {md(cover['audit_date'])}")
    performance = s["performance"]
    if performance.get("present"):
        for row in performance["overall"]:
            if row["metric"] == "accuracy":
                lines.append(f"- Accuracy: {row['value']} (95 % CI {row['interval']}, n = {row['n']})")
    labels = s["label_quality"]
    if labels.get("present"):
        lines.append(f"- Label disagreement rate: {labels['disagreement_rate']}"
                     + (f" (95 % CI {labels['interval']})" if labels["interval"] else "")
                     + f"; model error rate on the same images: {labels['model_error_rate']}"
                     + (f" (95 % CI {labels['model_error_interval']})" if labels["model_error_interval"] else "")
                     + f"; {labels['n_label_issues']} images flagged (a screening figure, not a label-error rate; "
                     + f"probabilities: {labels['source']})")
        verified = labels.get("verified")
        if verified and verified["available"]:
            lines.append(f"- Verified label-error rate: {verified['rate']} (95 % CI {verified['interval']}), from "
                         f"{verified['reviewed']} reviewed images of a random sample of {verified['sample_size']}; "
                         f"{verified['confirmed_errors']} confirmed errors ({verified['confirmed_outside']} outside the "
                         f"sample, not in the estimate)")
        elif verified:
            lines.append(f"- Verified label-error rate: not available ({markdown_text_code(verified['message'])})")
    lines.append("")
    findings = s["summary"]["findings"]
    if findings:
        lines += ["### Findings", ""] + [f"{i}. {md(f)}" for i, f in enumerate(findings[:8], 1)] + [""]
    if s["summary"].get("tests"):
        lines += [md(s["summary"]["tests"]), ""]
    if s["summary"].get("leads"):
        lines += ["### Leads (exploratory, check on new data)", ""] + [f"- {md(f)}" for f in s["summary"]["leads"]]
        lines.append("")
    errors = s["summary"]["errors"]
    if errors:
        lines += ["### Analyses that failed", ""] + [f"- `{code(e['analysis'])}`: {md(e['message'])}" for e in errors]
        lines.append("")
    policy = s["policy"]
    if policy and policy["checks"]:
        lines += ["### Policy checks", "", "| status | check | where | value | threshold |",
                  "|---|---|---|---:|---:|"]
        for check in policy["checks"][:max_checks]:
            lines.append(f"| {STATUS_MARK.get(check['status'], '')} {check['status']} | `{check['name']}` | "
                         f"{md(check['where'])} | {check['value']} | {check['threshold']} |")
        if len(policy["checks"]) > max_checks:
            lines.append(f"\n{len(policy['checks']) - max_checks} more checks in the full report.")
        lines.append("")
    if performance.get("present") and performance["worst"]:
        lines += ["### Groups significantly worse than the rest", "",
                  "| scope | metric | attribute | group | n | value | 95 % CI | adjusted p |",
                  "|---|---|---|---|---:|---:|---:|---:|"]
        for row in performance["worst"][:8]:
            lines.append(f"| {md(row.get('scope', '-'))} | {md(row['metric'])} | {md(row['attribute'])} | "
                         f"{md(row['group'])} | {row['n']} | {row['value']} | {row['interval']} | "
                         f"{row.get('p_adjusted', '')} |")
        lines.append("")
    annotations = s.get("annotations")
    if annotations:
        lines += ["### Annotators", ""] + [f"- {md(f)}" for f in annotations["findings"]]
        lines += [f"- {md(k)}: {md(v)}" for k, v in annotations["items"]]
        if annotations["flagged"]:
            lines += ["", "| annotator | labels | accuracy | 95 % CI |", "|---|---:|---:|---:|"]
            lines += [f"| {md(r['annotator'])} | {r['n']} | {r['accuracy']} | {r['interval']} |"
                      for r in annotations["flagged"][:10]]
        worst_groups = [r for r in annotations["by_group"] if r["verdict"] == "worse_than_rest"]
        if worst_groups:
            lines += ["", "| attribute | group | n | alpha | 95 % CI |", "|---|---|---:|---:|---:|"]
            lines += [f"| {md(r['attribute'])} | {md(r['group'])} | {r['n']} | {r['value']} | {r['interval']} |"
                      for r in worst_groups[:8]]
        lines.append("")
    if s["skipped"]["n"]:
        reasons = "; ".join(f"{md(r['reason'])} ({r['n']})" for r in s["skipped"]["by_reason"][:5])
        lines += [f"{s['skipped']['n']} inputs were skipped: {reasons}.", ""]
    provenance = dict(s["provenance"]["main"])
    lines.append(f"<sub>data hash `{code(provenance.get('data_hash', '-'))}` · model `"
                 f"{code(provenance.get('model_sha256', '-'))}` · seed {md(provenance.get('seed', '-'))} · "
                 f"{md(cover['tool'])}</sub>")
    return "\n".join(lines) + "\n"
