"""Make the README's screenshots (``docs/screenshots/*.png``) from the sample audit in a real browser.

    python docs/make_screenshots.py [--audit reports/sample] [--out docs/screenshots]

Uses Debian's chromium through Playwright (``/usr/bin/chromium``; never ``playwright install``). The tests
never write here: this script is the only thing that changes the tracked screenshots.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "app"))  # the app runner shared with the browser tests

from app_server import browser, open_page, running_app, switch_page  # noqa: E402

PAGES = [("Overview", "overview"), ("Classes", "classes"), ("Attributes", "attributes"),
         ("Label quality", "labels"), ("Fairness", "fairness"), ("Data quality", "quality"), ("Export", "export")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit", default=str(REPO / "reports" / "sample"),
                        help="audit folder to show (default: reports/sample; `streamlit run app.py` builds it)")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"), help="folder for the PNGs")
    parser.add_argument("--width", type=int, default=1400, help="browser window width in pixels (default 1400)")
    parser.add_argument("--height", type=int, default=1200, help="browser window height in pixels (default 1200)")
    arguments = parser.parse_args(argv)
    audit = Path(arguments.audit).resolve()
    if not (audit / "audit.json").is_file():
        print(f"{audit} holds no audit.json: run `streamlit run app.py` once (it builds reports/sample) or give "
              "--audit", file=sys.stderr)
        return 2
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    with running_app("--audit", str(audit), env={"IMAGEFAIR_REPORTS": str(audit.parent)}) as url, \
            browser(width=arguments.width, height=arguments.height) as page:
        open_page(page, url)
        for title, name in PAGES:
            if title != "Overview":
                switch_page(page, title)
            page.screenshot(path=str(out / f"{name}.png"))
            print(out / f"{name}.png")
        switch_page(page, "Label quality")
        page.get_by_role("heading", name="Suspect images").evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "gallery.png"))
        print(out / "gallery.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
