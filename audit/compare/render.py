"""Render a comparison (``comparison.json`` content) as Markdown; HTML and PDF in :mod:`audit.compare.report`."""
from __future__ import annotations

from audit.report.markdown import STATUS_MARK, code, md

MAX_MD_ROWS = 12


def pct(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def points(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:+.{digits}f}"


def where(row: dict) -> str:
    parts = []
    if row.get("attribute") not in (None, "all"):
        parts.append(f"{row['attribute']} = {row['group']}")
    if row.get("class"):
        parts.append(f"class {row['class']}")
    return ", ".join(parts) or "overall"


def key_rows(comparison: dict, limit: int = MAX_MD_ROWS) -> list[dict]:
    """Model rows worth showing first: regressions, improvements, then the primary rows."""
    rows = comparison["model"].get("rows", [])
    rank = {"regressed": 0, "improved": 1, "no_evidence_of_change": 2, "insufficient_data": 3}
    primary_metric = comparison["model"].get("primary_metric")
    chosen = sorted(rows, key=lambda r: (rank[r["verdict"]], r["scope"] != "primary",
                                         not (r["attribute"] == "all" and r["class"] == "" and r["metric"] == primary_metric),
                                         -abs(r["difference"] or 0)))
    return chosen[:limit]


def render_comparison_markdown(comparison: dict, *, max_rows: int = MAX_MD_ROWS, max_findings: int = 8) -> str:
    """A pull-request comment: verdict (if a policy was given), counts, findings, the key metric changes."""
    counts = comparison["matching"]["counts"]
    lines = ["## imagefair comparison", ""]
    verdict = comparison.get("verdict")
    if verdict:
        lines.append(f"**Regression verdict: {STATUS_MARK.get(verdict['status'], '')} {verdict['status']}**")
        lines.append("")
    lines.append(f"- OLD `{code(comparison['old']['path'])}`: {comparison['old']['n_images']} images; "
                 f"NEW `{code(comparison['new']['path'])}`: {comparison['new']['n_images']} images")
    lines.append("- Images: " + ", ".join(f"{v} {k}" for k, v in counts.items())
                 + f" (matched by {comparison['matching']['method']})")
    lines.append(f"- Model comparison: {comparison['model']['method']}"
                 + (f" on {comparison['model']['n_paired']} images" if comparison['model']['method'] == 'paired' else ""))
    vc = comparison["model"].get("verdict_counts") or {}
    if vc:
        lines.append("- Verdicts: " + ", ".join(f"{v} {k}" for k, v in sorted(vc.items())))
    if comparison.get("multiplicity"):
        from audit.compare.multiplicity import tests_made_sentence

        lines.append(f"- Tests: {md(tests_made_sentence(comparison['multiplicity']))}")
    lines.append("")
    if comparison["findings"]:
        lines.append("### Findings")
        lines.extend(f"{i}. {md(text)}" for i, text in enumerate(comparison["findings"][:max_findings], 1))
        if len(comparison["findings"]) > max_findings:
            lines.append(f"\n({len(comparison['findings']) - max_findings} more in comparison.json)")
        lines.append("")
    rows = key_rows(comparison, max_rows)
    if rows:
        lines.append("### Key metric changes (new - old, points, 95 % CI)")
        lines.append("| verdict | where | metric | old | new | change | CI | n |")
        lines.append("|---|---|---|---:|---:|---:|---|---:|")
        for r in rows:
            lines.append(f"| {r['verdict']}{'' if r['scope'] == 'primary' else ' (expl.)'} | {md(where(r))} | "
                         f"{r['metric']} | {pct(r['old'])} | {pct(r['new'])} | {points(r['difference'])} | "
                         f"{points(r['ci_low'])} to {points(r['ci_high'])} | {r['n_new']} |")
        lines.append("")
    if verdict:
        lines.append("### Regression checks")
        lines.append("| status | check | value | threshold | details |")
        lines.append("|---|---|---:|---:|---|")
        for c in verdict["checks"]:
            value = "-" if c["value"] is None else f"{c['value']:.4g}"
            lines.append(f"| {STATUS_MARK.get(c['status'], '')} {c['status']} | `{c['name']}` | {value} | "
                         f"{c['threshold']} | {md(c['message'])} |")
    return "\n".join(lines) + "\n"
