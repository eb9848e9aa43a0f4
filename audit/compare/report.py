"""Render a comparison folder as HTML, PDF (WeasyPrint, from the same HTML) or Markdown.

Render only: every number is read from ``comparison.json`` / ``image_changes.parquet``. Every user string
(paths, attribute, group and class names, ids) is escaped, in tables and in the charts (SVG built here with
escaped text, embedded as a ``data:`` URI so the PDF needs no network and no script). Thumbnails are only
read from inside the data root recorded by the audit the image belongs to.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

from audit.compare.folder import load_comparison_folder
from audit.compare.render import key_rows, pct, points, render_comparison_markdown, where
from audit.display import attribute_label, group_sort_key, metric_label
from audit.errors import InputError
from audit.escaping import html_text

FORMATS = ("pdf", "html", "md")
ERROR_FORMAT = "--format must be pdf, html or md, got {value!r}"
ERROR_OUT_IS_DIR = "--out {path} is a folder; give a file name (e.g. {path}/comparison.{ext})"
ERROR_OUT_NOT_WRITABLE = "cannot write the report to {path} ({reason}); give a file in a folder you can write to"
MAX_CHANGED_IMAGES = 24
VERDICT_COLOUR = {"regressed": "#c0392b", "improved": "#1e8449", "no_evidence_of_change": "#2e6da4",
                  "insufficient_data": "#999999"}

CSS = """
body { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 11px; color: #222; margin: 18px; }
h1 { font-size: 20px; } h2 { font-size: 15px; margin-top: 22px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 6px 0; } td, th { border: 1px solid #ddd; padding: 3px 6px; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; }
.verdict-regressed { color: #c0392b; font-weight: bold; } .verdict-improved { color: #1e8449; font-weight: bold; }
.note { color: #555; } .thumbs { display: flex; flex-wrap: wrap; gap: 8px; }
.thumb { width: 150px; font-size: 9px; word-wrap: break-word; } .thumb img { width: 64px; height: 64px; }
.placeholder { width: 64px; height: 64px; background: #eee; display: inline-block; }
@page { size: A4; margin: 12mm; }
"""


def dumbbell_svg(rows: list[dict], *, title: str, width: int = 640) -> str:
    """An SVG dumbbell chart: per group, OLD (grey) and NEW (coloured by verdict) with their 95 % intervals.

    Every label is escaped. Returns the SVG text.
    """
    rows = [r for r in rows if r.get("old") is not None and r.get("new") is not None]
    left, right, top, step = 190, 30, 34, 24
    height = top + step * max(len(rows), 1) + 30
    values = [v for r in rows for v in (r.get("old_ci_low"), r.get("old_ci_high"), r.get("new_ci_low"),
                                         r.get("new_ci_high"), r["old"], r["new"]) if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max((hi - lo) * 0.08, 0.01)
    lo, hi = max(lo - pad, 0.0), min(hi + pad, 1.0) if hi <= 1 else hi + pad

    def x(value):
        return left + (width - left - right) * ((value - lo) / (hi - lo) if hi > lo else 0.5)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial" font-size="11">',
             f'<text x="4" y="16" font-weight="bold">{html_text(title)}</text>',
             f'<text x="{width - right}" y="16" text-anchor="end" fill="#555">grey: OLD, colour: NEW (95 % CI)</text>']
    for tick in range(5):
        value = lo + (hi - lo) * tick / 4
        parts.append(f'<line x1="{x(value):.1f}" y1="{top - 8}" x2="{x(value):.1f}" y2="{height - 24}" '
                     f'stroke="#eee"/><text x="{x(value):.1f}" y="{height - 10}" text-anchor="middle" '
                     f'fill="#555">{100 * value:.0f} %</text>')
    for i, r in enumerate(rows):
        y = top + step * i
        colour = VERDICT_COLOUR.get(r.get("verdict"), "#2e6da4")
        label = r["class"] or (r["group"] if r["attribute"] != "all" else "overall")
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{html_text(str(label)[:30])}</text>')
        for value, low, high, fill, dy in ((r["old"], r.get("old_ci_low"), r.get("old_ci_high"), "#888888", -4),
                                            (r["new"], r.get("new_ci_low"), r.get("new_ci_high"), colour, 4)):
            if low is not None and high is not None:
                parts.append(f'<line x1="{x(low):.1f}" y1="{y + dy}" x2="{x(high):.1f}" y2="{y + dy}" '
                             f'stroke="{fill}" stroke-width="2" opacity="0.6"/>')
        parts.append(f'<line x1="{x(r["old"]):.1f}" y1="{y - 4}" x2="{x(r["new"]):.1f}" y2="{y + 4}" '
                     f'stroke="#bbb"/>')
        parts.append(f'<circle cx="{x(r["old"]):.1f}" cy="{y - 4}" r="4" fill="#888888"/>')
        parts.append(f'<circle cx="{x(r["new"]):.1f}" cy="{y + 4}" r="4" fill="{colour}"/>')
    parts.append("</svg>")
    return "".join(parts)


def svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def dumbbell_charts(comparison: dict) -> list[tuple[str, str]]:
    """(title, svg) per primary attribute: the primary metric's groups, old vs new."""
    metric = comparison["model"].get("primary_metric") or "accuracy"
    rows = [r for r in comparison["model"].get("rows", []) if r["metric"] == metric and r["class"] == ""]
    charts = []
    overall = [r for r in rows if r["attribute"] == "all"]
    for attribute in comparison["data"].get("attributes") or []:
        # groups in natural order (0-2, 3-9, 10-19), as every other view lists them
        group_rows = overall + sorted((r for r in rows if r["attribute"] == attribute),
                                      key=lambda r: group_sort_key(r["group"]))
        if len(group_rows) > 1:
            title = f"{metric_label(metric)} by {attribute_label(attribute)}"
            charts.append((title, dumbbell_svg(group_rows[:40], title=title)))
    if not charts and overall:
        class_rows = overall + [r for r in comparison["model"]["rows"] if r["metric"] == "recall"
                                and r["attribute"] == "all"]
        charts.append(("recall by class", dumbbell_svg(class_rows[:40], title="recall by class")))
    return charts


def _inside(path, root) -> bool:
    from audit.report.thumbnails import _inside_root

    return _inside_root(path, root)


def _thumbnail(path, root) -> str | None:
    from audit.report.thumbnails import thumbnail_data_uri

    if path is None or not _inside(path, root):
        return None
    return thumbnail_data_uri(path)


def _label(value) -> str:
    """A label of an image change; ``-`` where the version has no such image (added: no old label)."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return str(value)


def changed_images(folder, comparison: dict, *, thumbnails: bool, limit: int = MAX_CHANGED_IMAGES) -> list[dict]:
    """The first ``limit`` relabelled, replaced, added or removed images, with thumbnails from inside the roots."""
    changes = folder.image_changes
    order = {"relabelled": 0, "replaced": 1, "added": 2, "removed": 3}
    picked = changes[changes["change"].isin(list(order))].copy()
    picked["_order"] = picked["change"].map(order)
    picked = picked.sort_values("_order", kind="stable").head(limit)
    root_old, root_new = comparison["old"].get("data_root"), comparison["new"].get("data_root")
    out = []
    for row in picked.to_dict("records"):
        uri = None
        if thumbnails:
            uri = _thumbnail(row.get("path_new"), root_new) if row.get("path_new") else None
            if uri is None and row.get("path_old"):
                uri = _thumbnail(row.get("path_old"), root_old)
        out.append({"change": row["change"], "id": row.get("id_new") or row.get("id_old"),
                    "label_old": _label(row.get("label_old")), "label_new": _label(row.get("label_new")),
                    "review": row.get("review_decision"), "thumbnail": uri})
    return out


def render_comparison_html(folder, *, thumbnails: bool = True, for_pdf: bool = False) -> str:
    """The comparison report as one self-contained HTML page (no script; images as data: URIs)."""
    c = folder.comparison
    e = html_text
    counts = c["matching"]["counts"]
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
           "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
           "style-src 'unsafe-inline'\">",
           f"<title>imagefair comparison</title><style>{CSS}</style></head><body>",
           "<h1>imagefair comparison</h1>",
           f"<p>OLD <code>{e(c['old']['path'])}</code> ({c['old']['n_images']} images) &rarr; NEW "
           f"<code>{e(c['new']['path'])}</code> ({c['new']['n_images']} images). Images matched by "
           f"{e(c['matching']['method'])}; model comparison {e(c['model']['method'])}"
           + (f" on {c['model']['n_paired']} images (labels held at NEW's)" if c['model']['method'] == 'paired' else "")
           + ".</p>"]
    verdict = c.get("verdict")
    if verdict:
        out.append(f"<p><b>Regression verdict: {e(verdict['status'])}</b></p>")
    out.append("<table><tr>" + "".join(f"<th>{e(k)}</th>" for k in counts) + "</tr><tr>"
               + "".join(f"<td class='num'>{v}</td>" for v in counts.values()) + "</tr></table>")
    out.append("<h2>Findings</h2><ol>" + "".join(f"<li>{e(t)}</li>" for t in c["findings"]) + "</ol>")
    charts = dumbbell_charts(c)
    if charts:
        out.append("<h2>Old vs new by group</h2>")
        for title, svg in charts:
            out.append(f"<p><img alt='{e(title)}' src='{svg_data_uri(svg)}'></p>")
    rows = key_rows(c, 30)
    if rows:
        out.append("<h2>Key metric changes</h2><table><tr><th>verdict</th><th>scope</th><th>where</th><th>metric</th>"
                   "<th>old</th><th>new</th><th>change (points)</th><th>95 % CI</th><th>p (adj.)</th><th>n</th>"
                   "<th>method</th></tr>")
        for r in rows:
            p = "-" if r["p_adjusted"] is None else f"{r['p_adjusted']:.2g}"
            out.append(f"<tr><td class='verdict-{e(r['verdict'])}'>{e(r['verdict'])}</td><td>{e(r['scope'])}</td>"
                       f"<td>{e(where(r))}</td><td>{e(r['metric'])}</td><td class='num'>{pct(r['old'])}</td>"
                       f"<td class='num'>{pct(r['new'])}</td><td class='num'>{points(r['difference'])}</td>"
                       f"<td>{points(r['ci_low'])} to {points(r['ci_high'])}</td><td class='num'>{p}</td>"
                       f"<td class='num'>{r['n_new']}</td><td>{e(r['method'])}</td></tr>")
        out.append("</table>")
    out.append("<h2>Class shares</h2>" + _share_table(c["data"]["class_shares"]))
    if c["data"]["group_shares"]:
        out.append("<h2>Group shares</h2>" + _share_table(c["data"]["group_shares"]))
    label_rows = c["labels"]["rows"]
    if label_rows:
        out.append("<h2>Labels</h2><p class='note'>" + e(c["labels"].get("note", "")) + "</p><table><tr><th>where</th>"
                   "<th>metric</th><th>old</th><th>new</th><th>change</th><th>95 % CI</th><th>verdict</th></tr>")
        for r in label_rows[:40]:
            out.append(f"<tr><td>{e(where(r))}</td><td>{e(r['metric'])}</td><td class='num'>{pct(r['old'])}</td>"
                       f"<td class='num'>{pct(r['new'])}</td><td class='num'>{points(r['difference'])}</td>"
                       f"<td>{points(r['ci_low'])} to {points(r['ci_high'])}</td><td>{e(r['verdict'])}</td></tr>")
        out.append("</table>")
    reviews = c["data"]["reviews"]
    out.append("<h2>Relabels and reviews</h2><ul>" + "".join(
        f"<li>{e(k.replace('_', ' '))}: {e(v)}</li>" for k, v in reviews.items()) + "</ul>")
    dup = c["quality"]["cross_version_duplicates"]
    out.append("<h2>Copies across versions</h2><ul>" + "".join(
        f"<li>{e(k.replace('_', ' '))}: {e(v)}</li>" for k, v in dup.items() if k != "examples") + "</ul>")
    images = changed_images(folder, c, thumbnails=thumbnails)
    if images:
        out.append("<h2>Changed images</h2><div class='thumbs'>")
        for item in images:
            picture = (f"<img alt='' src='{item['thumbnail']}'>" if item["thumbnail"]
                       else "<span class='placeholder'></span>")
            labels = f"{e(item['label_old'])} &rarr; {e(item['label_new'])}"
            out.append(f"<div class='thumb'>{picture}<br><b>{e(item['change'])}</b> {e(item['id'])}<br>{labels}"
                       + (f"<br>review: {e(item['review'])}" if item["review"] else "") + "</div>")
        out.append("</div>")
    if c["notes"]:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in c["notes"]) + "</ul>")
    if verdict:
        out.append("<h2>Regression checks</h2><table><tr><th>status</th><th>check</th><th>value</th>"
                   "<th>threshold</th><th>details</th></tr>")
        for check in verdict["checks"]:
            value = "-" if check["value"] is None else f"{check['value']:.4g}"
            out.append(f"<tr><td>{e(check['status'])}</td><td>{e(check['name'])}</td><td class='num'>{value}</td>"
                       f"<td class='num'>{e(check['threshold'])}</td><td>{e(check['message'])}</td></tr>")
        out.append("</table>")
    out.append(f"<p class='note'>imagefair {e(c['tool']['version'])}, comparison schema {e(c['schema_version'])}; "
               "methods: docs/methods.md, section 'Comparing two audits'.</p></body></html>")
    return "\n".join(out)


def _share_table(rows: list[dict]) -> str:
    e = html_text
    out = ["<table><tr><th>attribute</th><th>group</th><th>n old</th><th>n new</th><th>share old</th>"
           "<th>share new</th><th>change (points, 95 % CI)</th><th>removed</th></tr>"]
    for r in rows[:60]:
        out.append(f"<tr><td>{e(r['attribute'])}</td><td>{e(r['group'])}</td><td class='num'>{r['n_old']}</td>"
                   f"<td class='num'>{r['n_new']}</td><td class='num'>{pct(r['share_old'])}</td>"
                   f"<td class='num'>{pct(r['share_new'])}</td><td>{points(r['difference'])} "
                   f"({points(r['ci_low'])} to {points(r['ci_high'])})</td><td class='num'>{r['n_removed']}</td></tr>")
    out.append("</table>")
    return "".join(out)


def render_comparison_report(folder, *, format: str, out=None, thumbnails: bool = True) -> Path:
    """Render the comparison in ``folder`` to ``out`` (default ``folder/report.<format>``); return the path."""
    from audit.io.atomic import check_replaceable, write_bytes_atomic

    if format not in FORMATS:
        raise InputError(ERROR_FORMAT.format(value=format))
    target = Path(out) if out is not None else Path(folder) / f"report.{format}"
    if target.is_dir():
        raise InputError(ERROR_OUT_IS_DIR.format(path=target, ext=format))
    check_replaceable(target)  # never replace a device node, pipe or socket (as the audit report)
    data = load_comparison_folder(folder)  # one generation; a folder mixing two runs is refused
    if format == "md":
        payload = render_comparison_markdown(data.comparison).encode("utf-8")
    elif format == "html":
        payload = render_comparison_html(data, thumbnails=thumbnails).encode("utf-8")
    else:
        payload = _pdf(render_comparison_html(data, thumbnails=thumbnails, for_pdf=True), base=data.path)
    try:
        write_bytes_atomic(target, payload)
    except OSError as error:
        raise InputError(ERROR_OUT_NOT_WRITABLE.format(path=target, reason=error.strerror or type(error).__name__),
                         source=str(target)) from error
    mask = os.umask(0)
    os.umask(mask)
    try:
        target.chmod(0o666 & ~mask)
    except OSError:
        pass
    return target


def _pdf(html: str, *, base) -> bytes:
    from PIL import ImageFile

    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        from weasyprint import HTML
        from weasyprint.urls import URLFetcher
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated
    import logging

    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    offline = URLFetcher(allowed_protocols=("data",))
    return HTML(string=html, base_url=str(base), url_fetcher=offline).write_pdf()
