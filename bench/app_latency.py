"""Dashboard latency in a real browser on a large audit.

    .venv/bin/python bench/app_latency.py --json bench/results/app_latency.json [--n-images 50000]

Builds (once, cached under ``bench/.cache/app_latency/``) a synthetic data set of tiny PNG images with a
manifest and a predictions file, runs the real engine on it (``run_audit``) and writes the audit folder. Then
starts ``streamlit run app.py -- --audit FOLDER`` on 127.0.0.1 and drives Debian's chromium (Playwright,
headless) against it:

- ``first_page_cold_s``: first browser session after the server starts: page load until the Overview page
  has finished its script run and drawn (includes reading the audit's tables into the server's cache);
- ``first_page_s``: median over fresh sessions once the server is warm, each in a new browser with an empty
  profile (the browser downloads and parses Streamlit's JavaScript every time: the strict figure);
- ``first_page_cached_browser_s``: the same with new tabs of one browser whose HTTP cache holds the app's
  static files (a returning user: still a new Streamlit session, script run and page render);
- ``page_switch_s``: median over clicks in the sidebar from page to page (Overview -> Classes -> ... ->
  Export, several rounds) until the new page has finished and every plotly chart is drawn;
  ``page_switch_by_page_s`` gives each page's median.

"Drawn" = Streamlit reports the script run finished, no skeleton is left, the page title is shown and every
plotly chart has its SVG (see ``tests/app/app_server.py``). Targets from issue 6: < 2 s and < 1 s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "app"))

from app_server import CHROMIUM, browser, open_page, running_app, switch_page  # noqa: E402

PAGES = ["Classes", "Attributes", "Label quality", "Fairness", "Data quality", "Export", "Overview"]


def build_cached_audit(n_images: int, cache: Path) -> tuple[Path, float | None]:
    """The audit folder of ``n_images`` synthetic images; built by the engine on first use."""
    from synthetic_audit import build_audit

    folder = cache / f"n{n_images}"
    audit = folder / "reports" / "synthetic"
    if (audit / "audit.json").exists():
        return audit, None
    start = time.perf_counter()
    build_audit(folder / "data", audit, n_images=n_images, seed=1, n_bootstrap=100)
    return audit, time.perf_counter() - start


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0]}
    try:
        from importlib import metadata

        info["streamlit"] = metadata.version("streamlit")
        info["playwright"] = metadata.version("playwright")
    except Exception:  # noqa: BLE001
        pass
    try:
        info["chromium"] = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True,
                                          timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        info["chromium"] = None
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError):
        pass
    return info


def measure(audit: Path, *, sessions: int, rounds: int) -> dict:
    with running_app("--audit", str(audit), env={"IMAGEFAIR_REPORTS": str(audit.parent)}) as url:
        with browser() as page:
            cold = open_page(page, url)
        warm = []
        for _ in range(sessions):
            with browser() as page:
                warm.append(open_page(page, url))
        cached = []
        with browser() as page:
            open_page(page, url)  # fills the browser's HTTP cache
            for _ in range(sessions):
                tab = page.context.new_page()
                cached.append(open_page(tab, url))
                tab.close()
        switches: dict[str, list[float]] = {title: [] for title in PAGES}
        with browser() as page:
            open_page(page, url)
            for title in PAGES:  # one warm-up round: the first visit of a page loads its widgets' code
                switch_page(page, title)
            for _ in range(rounds):
                for title in PAGES:
                    switches[title].append(switch_page(page, title))
    every = [t for values in switches.values() for t in values]
    return {"first_page_cold_s": round(cold, 3), "first_page_s": round(statistics.median(warm), 3),
            "first_page_runs_s": [round(t, 3) for t in warm],
            "first_page_cached_browser_s": round(statistics.median(cached), 3),
            "first_page_cached_browser_runs_s": [round(t, 3) for t in cached],
            "page_switch_s": round(statistics.median(every), 3), "page_switch_max_s": round(max(every), 3),
            "page_switch_by_page_s": {k: round(statistics.median(v), 3) for k, v in switches.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "app_latency.json"))
    parser.add_argument("--n-images", type=int, nargs="+", default=[50_000])
    parser.add_argument("--cache", default=str(REPO / "bench" / ".cache" / "app_latency"))
    parser.add_argument("--sessions", type=int, default=5, help="fresh sessions for first_page_s")
    parser.add_argument("--rounds", type=int, default=3, help="rounds through all pages for page_switch_s")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is absent: apt-get install chromium", file=sys.stderr)
        return 2
    cases = []
    for n in args.n_images:
        audit, build_s = build_cached_audit(n, Path(args.cache))
        case = {"n_images": n, "audit_build_s": None if build_s is None else round(build_s, 1)}
        case["load_average_1m_before"] = round(os.getloadavg()[0], 2)
        case.update(measure(audit, sessions=args.sessions, rounds=args.rounds))
        case["load_average_1m_after"] = round(os.getloadavg()[0], 2)
        print(json.dumps(case), flush=True)
        cases.append(case)
    result = {"machine": machine(), "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "cases": cases}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
