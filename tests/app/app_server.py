"""Start ``streamlit run app.py`` on 127.0.0.1 and drive it with Debian's chromium through Playwright.

Shared by ``tests/app/test_browser.py`` and ``bench/app_latency.py``. Never runs ``playwright install``:
the browser is the system's ``/usr/bin/chromium``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

#: True when the page has finished its script run, shows its title and every plotly chart has drawn.
READY_SCRIPT = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') === 'running') return false;
  if (document.querySelector('[data-testid="stSkeleton"]')) return false;
  if (!document.querySelector('[data-testid="stMain"] h1')) return false;
  for (const chart of document.querySelectorAll('[data-testid="stPlotlyChart"]')) {
    if (!chart.querySelector('.main-svg')) return false;
  }
  return true;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(*app_args: str, env: dict | None = None, timeout: float = 60.0):
    """Run the app on a free port; yield its base URL; stop it (only this process) afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer", "--", *app_args]
    environment = dict(os.environ, **(env or {}))
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                raise RuntimeError(f"streamlit exited with {process.returncode}:\n{output[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("streamlit did not start in time")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def browser(width: int = 1400, height: int = 1000):
    """A headless chromium page (Playwright, system chromium)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            # An explicit context, so further tabs (same HTTP cache, new Streamlit sessions) can be opened.
            page = instance.new_context(viewport={"width": width, "height": height}).new_page()
            yield page
        finally:
            instance.close()


def wait_ready(page, *, timeout_ms: int = 120_000) -> None:
    """Wait until the current app page has rendered completely (see ``READY_SCRIPT``)."""
    page.wait_for_function(READY_SCRIPT, timeout=timeout_ms, polling=50)


def open_page(page, url: str, *, timeout_ms: int = 120_000) -> float:
    """Load ``url`` in a fresh document; return seconds until it has rendered completely."""
    start = time.perf_counter()
    page.goto(url)
    wait_ready(page, timeout_ms=timeout_ms)
    return time.perf_counter() - start


def switch_page(page, title: str, *, timeout_ms: int = 120_000) -> float:
    """Click the sidebar link ``title``; return seconds until the new page has rendered completely."""
    start = time.perf_counter()
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    page.wait_for_function(
        "title => { const h = document.querySelector('[data-testid=\"stMain\"] h1');"
        " return h && h.textContent.trim().startsWith(title); }", arg=title, timeout=timeout_ms, polling=50)
    wait_ready(page, timeout_ms=timeout_ms)
    return time.perf_counter() - start
