"""The engine never depends on its views: importing the engine pulls in no streamlit or plotly."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ENGINE_MODULES = ["audit", "audit.io.manifest", "audit.io.images", "audit.analysis.distribution",
                  "audit.analysis.associations", "audit.analysis.label_noise", "audit.analysis.group_performance",
                  "audit.pipeline", "audit.analyses", "audit.cli", "audit.policy"]


def test_engine_imports_no_streamlit_or_plotly():
    code = ("import importlib, sys\n"
            f"for name in {ENGINE_MODULES!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except ModuleNotFoundError as e:\n        print('missing', e)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'plotly')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_no_streamlit_import_anywhere_under_audit():
    offenders = []
    for path in (REPO / "audit").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(("import streamlit", "from streamlit")):
                offenders.append(str(path))
    assert offenders == []
