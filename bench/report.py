"""Time the PDF and HTML reports of a synthetic 50,000-image, 100-class audit folder.

Usage: python bench/report.py --json bench/results/report.json [--n-images 50000] [--n-classes 100]

Writes ``{"machine": {...}, "cases": [{"n_images", "n_classes", "pdf_s", "html_s", "md_s", "pdf_pages",
"pdf_mb", "html_mb", "n_charts", "charts_static"}]}`` (contract benchmark format): the requested case and a
20,000-image, 1,000-class case (``--no-wide`` skips it) to show a long class list stays readable. Each format
is rendered in a fresh subprocess so the timing includes imports and, for the PDF, starting Chromium for
kaleido. There is no peer: no other tool renders an image-audit PDF from the same data. Target: pdf_s < 15.
The machine is shared: ``machine.load_average_1m_at_end`` says how busy it was.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def render_in_subprocess(folder: Path, fmt: str, out: Path) -> float:
    code = ("import sys, time; t = time.perf_counter(); from audit.report.render import render_report; "
            f"render_report({str(folder)!r}, format={fmt!r}, out={str(out)!r}); print(time.perf_counter() - t)")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"rendering {fmt} failed:\n{result.stderr}")
    return wall


def run_case(n_images: int, n_classes: int) -> dict:
    from pypdf import PdfReader

    from audit.report.render import build_report
    from tests.audit_builder import build_audit_folder

    with tempfile.TemporaryDirectory() as temporary:
        folder = build_audit_folder(Path(temporary) / "audit", n_images=n_images, n_classes=n_classes,
                                    n_image_files=200)
        results = {}
        for fmt in ("html", "pdf", "md"):
            out = Path(temporary) / f"report.{fmt}"
            results[f"{fmt}_s"] = round(render_in_subprocess(folder, fmt, out), 3)
            results[f"{fmt}_mb"] = round(out.stat().st_size / 1e6, 3)
        reader = PdfReader(Path(temporary) / "report.pdf")
        first_page = reader.pages[0].extract_text()
        report = build_report(folder, thumbnails=False)
        return {"n_images": n_images, "n_classes": n_classes, "pdf_s": results["pdf_s"],
                "html_s": results["html_s"], "md_s": results["md_s"], "pdf_pages": len(reader.pages),
                "pdf_mb": results["pdf_mb"], "html_mb": results["html_mb"], "n_charts": len(report.figures),
                "charts_static": "Chartsareleftout" not in "".join(first_page.split()), "target_pdf_s": 15}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--n-images", type=int, default=50_000)
    parser.add_argument("--n-classes", type=int, default=100)
    parser.add_argument("--no-wide", action="store_true", help="skip the extra 20,000-image, 1,000-class case")
    args = parser.parse_args()
    cases = [run_case(args.n_images, args.n_classes)]
    if not args.no_wide:
        cases.append(run_case(20_000, 1_000))  # a 1,000-class audit must stay readable (top N + others)
    machine = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
               "processor": platform.processor() or platform.machine(),
               "load_average_1m_at_end": os.getloadavg()[0]}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "cases": cases}, indent=2) + "\n")
    print(json.dumps(cases, indent=2))


if __name__ == "__main__":
    main()
