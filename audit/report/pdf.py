"""PDF report: the HTML report's template with print CSS and static charts, laid out by WeasyPrint.

Charts are the same plotly figures as in the app and the HTML report, exported as SVG by kaleido (>= 1, which
drives a local Chromium; one server per report). If kaleido or Chromium is unavailable the PDF is still
written, with tables only and a note saying why.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings

from audit.report.html import render_report_html, static_chart
from audit.report.document import Report

NOTE_NO_CHARTS = ("Charts are left out of this PDF because they could not be rendered as images ({reason}); "
                  "the tables hold the same numbers. Install Chromium (apt-get install chromium) for charts.")
CHART_WIDTH = 760
#: Seconds one chart may take (the first includes Chromium's start); past it the PDF has tables only.
CHART_TIMEOUT_S = 60.0
REASON_NO_BROWSER = "no Chromium or Chrome executable found"
REASON_TIMEOUT = "Chromium did not answer within {seconds:g} s"


def _browser_path() -> str | None:
    """The Chromium kaleido would start (``BROWSER_PATH`` first), or None when there is none to run.

    Kaleido >= 1 started without a browser fails in its server thread and leaves the caller waiting for ever;
    checking first turns that into a PDF without charts.
    """
    try:
        from choreographer.browsers.chromium import Chromium

        path = Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - an unexpected choreographer: fall back to PATH
        import shutil

        path = os.environ.get("BROWSER_PATH") or next(
            (found for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
             if (found := shutil.which(name))), None)
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def _call_with_timeout(function, seconds: float):
    """``function()`` in a daemon thread; :class:`TimeoutError` when it has not returned after ``seconds``."""
    box: dict = {}

    def target():
        try:
            box["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            box["error"] = error

    worker = threading.Thread(target=target, daemon=True, name="imagefair-chart")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(REASON_TIMEOUT.format(seconds=seconds))
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _chart_height(figure) -> int:
    height = figure.layout.height
    return int(height) if height else 360


class ChartServer:
    """Kaleido's Chromium, started early so its boot overlaps reading the audit (use as a context manager).

    ``reason`` is None while charts can be rendered, else why not (the PDF then has tables only).
    """

    def __init__(self):
        self.reason: str | None = None
        self._started = False

    def __enter__(self) -> "ChartServer":
        if _browser_path() is None:
            self.reason = REASON_NO_BROWSER
            return self
        try:
            import kaleido

            kaleido.start_sync_server(silence_warnings=True)
            self._started = True
        except Exception as error:  # noqa: BLE001 - any problem means "no charts", never "no report"
            self.reason = _reason(error)
        return self

    def _abandon(self) -> None:
        """Forget a server whose Chromium hangs: stopping it would wait for ever (here and at exit)."""
        try:
            from kaleido._sync_server import GlobalKaleidoServer

            GlobalKaleidoServer()._initialized = False  # noqa: SLF001 - its close() joins the hung thread
        except Exception:  # noqa: BLE001
            pass
        self._started = False

    def __exit__(self, *exc) -> None:
        if self._started:
            try:
                import kaleido

                kaleido.stop_sync_server(silence_warnings=True)
            except Exception:  # noqa: BLE001
                pass
            self._started = False

    def export(self, figures: dict) -> dict:
        """``{key: (svg bytes, mime)}`` for every figure; ``{}`` (and ``reason`` set) when kaleido cannot run."""
        if self.reason is not None or not figures:
            return {}
        images: dict = {}
        try:
            import plotly.io as pio

            for key, figure in figures.items():
                with warnings.catch_warnings():  # plotly warns that kaleido options are ignored with a server
                    warnings.simplefilter("ignore")
                    data = _call_with_timeout(
                        lambda figure=figure: pio.to_image(figure, format="svg", width=CHART_WIDTH,
                                                           height=_chart_height(figure)), CHART_TIMEOUT_S)
                images[key] = (data, "image/svg+xml")
        except TimeoutError as error:
            self.reason = str(error)
            self._abandon()
            return {}
        except Exception as error:  # noqa: BLE001 - Chromium missing, crashed or timed out
            self.reason = _reason(error)
            return {}
        return images


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}".rstrip(": ")


def export_static_charts(figures: dict) -> tuple[dict, str | None]:
    """``({key: (svg bytes, mime)}, None)``, or ``({}, reason)`` when kaleido cannot run."""
    with ChartServer() as server:
        images = server.export(figures)
    return images, server.reason


def render_pdf_html(report: Report, *, server: ChartServer | None = None) -> str:
    """The HTML WeasyPrint lays out (print CSS, static charts); a note replaces the charts if needed."""
    if server is None:
        images, reason = export_static_charts(report.figures)
    else:
        images, reason = server.export(report.figures), server.reason
    if reason is not None:
        report.notes.append(NOTE_NO_CHARTS.format(reason=reason))
    return render_report_html(report, chart=static_chart(images), mode="pdf")


def render_pdf(report: Report, *, server: ChartServer | None = None) -> bytes:
    """The PDF report as bytes (``server``: an already started :class:`ChartServer`, else one is started)."""
    from PIL import ImageFile

    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        from weasyprint import HTML
        from weasyprint.urls import URLFetcher
    finally:
        # importing weasyprint switches Pillow's LOAD_TRUNCATED_IMAGES on for the whole process, which would
        # make every later audit in it (the app, the tests) refuse to run (audit.io.images): switch it back
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated

    # everything the report embeds is a data: URI; never read a local file or the network, whatever text ends
    # up in the HTML
    offline = URLFetcher(allowed_protocols=("data",))
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    html = render_pdf_html(report, server=server)
    return HTML(string=html, base_url=str(report.folder), url_fetcher=offline).write_pdf()
