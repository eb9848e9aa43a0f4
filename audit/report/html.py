"""HTML report: one self-contained file (inline plotly.js, interactive charts, embedded thumbnails).

The same Jinja2 template (``templates/report.html.j2``, autoescaped: every string from user data is escaped)
also produces the PDF's HTML with static chart images (:mod:`audit.report.pdf`).
"""
from __future__ import annotations

import base64
from functools import lru_cache
from typing import Callable

from markupsafe import Markup

from audit.escaping import html_text_code
from audit.report.document import Report, fmt_number, fmt_percent

STATUS_CLASS = {"PASS": "pass", "WARN": "warn", "FAIL": "fail", "INSUFFICIENT_EVIDENCE": "insufficient",
                "ERROR": "error", "SKIPPED": "skipped", None: "none"}


def breakable(text) -> str:
    """``text`` with a zero-width space after ``.`` and ``_``, so long names (``performance.min_worst_group``,
    ``INSUFFICIENT_EVIDENCE``) wrap at those points instead of in the middle of a word."""
    return str(text).replace(".", ".\u200b").replace("_", "_\u200b")


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(loader=PackageLoader("audit.report", "templates"),
                              autoescape=select_autoescape(default=True, default_for_string=True),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["percent"] = fmt_percent
    environment.filters["number"] = fmt_number
    environment.filters["breakable"] = breakable
    # messages shared with the terminal (`commands` in backticks): escaped, the commands as <code>
    environment.filters["code_spans"] = lambda text: Markup(html_text_code(text))
    environment.globals["status_class"] = lambda status: STATUS_CLASS.get(status, "none")
    return environment


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def interactive_chart(report: Report) -> Callable[[str], Markup]:
    """``chart(key)`` for the template: the figure as a plotly div (plotly.js is inlined once in <head>)."""

    def chart(key: str) -> Markup:
        figure = report.figures.get(key)
        if figure is None:
            return Markup("")
        # plotly's JSON escapes '<', '>' and '/' in strings, so user text cannot close the <script>
        html = figure.to_html(full_html=False, include_plotlyjs=False,
                              config={"displaylogo": False, "responsive": True,
                                      "displayModeBar": False})  # the toolbar drew over legends
        return Markup(f'<div class="chart">{html}</div>')

    return chart


def static_chart(images: dict) -> Callable[[str], Markup]:
    """``chart(key)`` for the PDF: an <img> of the pre-rendered SVG/PNG, or nothing."""

    def chart(key: str) -> Markup:
        image = images.get(key)
        if image is None:
            return Markup("")
        data, mime = image
        uri = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
        return Markup('<div class="chart"><img alt="" src="{}"></div>').format(uri)

    return chart


def render_report_html(report: Report, *, chart: Callable[[str], Markup], mode: str, head_script: str = "") -> str:
    """Fill the template. ``mode``: ``"html"`` (screen) or ``"pdf"`` (print CSS, static charts)."""
    template = _environment().get_template("report.html.j2")
    return template.render(report=report, s=report.sections, audit=report.audit, chart=chart, mode=mode,
                           notes=report.notes, head_script=Markup(head_script), thumbnails=report.thumbnails)


def render_html(report: Report) -> str:
    """The interactive, self-contained HTML report."""
    script = "<script type=\"text/javascript\">" + _plotly_js().replace("</script", "<\\/script") + "</script>"
    return render_report_html(report, chart=interactive_chart(report), mode="html", head_script=script)
