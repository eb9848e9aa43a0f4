"""Issue 12 structure: one escaping helper per output kind, one JSON-cleaning helper, one ordering of check
statuses. Unit tests of each helper, and greps that no module grows its own copy again."""
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit import escaping
from audit.policy import STATUS_ORDER, Check, Verdict
from audit.types import json_float, json_safe

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "audit").rglob("*.py"), *(REPO / "app_pages").glob("*.py"), REPO / "app.py"])


def _grep(pattern: str, *, allowed=()) -> list:
    found = []
    for path in SOURCES:
        if path.relative_to(REPO).as_posix() in allowed:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    return found


def test_escaping_helpers():
    evil = "<a href='x'>A & B</a> [link](http://x) @team |*_`"
    assert escaping.html_text(evil) == ("&lt;a href=&#x27;x&#x27;&gt;A &amp; B&lt;/a&gt; [link](http://x) "
                                        "@team |*_`")
    assert escaping.plot_text(evil).startswith("&lt;a href='x'&gt;A &amp; B")
    once = escaping.plot_text(evil)
    assert escaping.plot_no_markup(once) == once and escaping.plot_no_markup(None) is None  # idempotent
    assert escaping.markdown_text("a|b\n<i>@x</i> [l](u)") == "a\\|b &lt;i&gt;@\u200bx&lt;/i&gt; \\[l\\](u)"
    assert escaping.markdown_code("a`b\nc") == "a'b c"
    assert escaping.streamlit_markdown(":red[x] $y$ _z_") == "\\:red\\[x\\] \\$y\\$ \\_z\\_"
    # commands in backticks stay code spans, the rest is escaped; an unbalanced backtick escapes everything
    assert escaping.streamlit_markdown_code("run `review *x*` on :red[y]") == "run `review *x*` on \\:red\\[y\\]"
    assert escaping.streamlit_markdown_code("a ` b") == "a \\` b"
    assert escaping.html_text_code("run `a<b` & go") == "run <code>a&lt;b</code> &amp; go"
    assert escaping.markdown_text_code("run `x` on a|b") == "run `x` on a\\|b"


def test_every_view_uses_the_one_escaping_helper_of_its_output():
    from app_pages import _charts, _state
    from audit.report import figures, markdown

    assert figures.label is escaping.plot_text and figures.no_markup is escaping.plot_no_markup
    assert _charts.plot_text is escaping.plot_text
    assert markdown.md is escaping.markdown_text and markdown.code is escaping.markdown_code
    assert _state.escape_markdown is escaping.streamlit_markdown
    ad_hoc = _grep(r"html\.escape\(|markupsafe import escape\b|replace\(\s*['\"][<&]['\"]\s*,\s*['\"]&"
                   r"|re\.compile\(r?['\"]\(\[\\\\`",
                   allowed=("audit/escaping.py",))
    assert not ad_hoc, "escape with audit/escaping.py:\n" + "\n".join(ad_hoc)


def test_one_json_cleaning_helper():
    value = {"a": np.float32(1.5), "b": [np.int64(2), np.nan, np.inf, pd.NA, None, pd.NaT], "c": (np.bool_(True),),
             "d": np.arange(2), 3: Path("/x")}
    assert json_safe(value) == {"a": 1.5, "b": [2, None, None, None, None, None], "c": [True], "d": [0, 1],
                                "3": "/x"}
    assert json_float(np.float64(0.25)) == 0.25 and json_float(float("nan")) is None and json_float(None) is None
    assert json_float(pd.NA) is None and json_float(-math.inf) is None and json_float(3) == 3.0
    copies = _grep(r"^\s*def _?(json_\w*|finite|jsonable|clean_json|json_float|json_number)\(",
                   allowed=("audit/types.py",))
    assert not copies, "use audit.types.json_safe / json_float:\n" + "\n".join(copies)


def test_one_ordering_of_check_statuses():
    from audit.gate import _summary_counts

    checks = [Check("a", status, 1.0, 1.0) for status in ("PASS", "SKIPPED", "FAIL", "ERROR", "WARN",
                                                            "INSUFFICIENT_EVIDENCE")]
    assert _summary_counts(Verdict("ERROR", checks)) == ", ".join(f"1 {s}" for s in STATUS_ORDER)
    names = "(?:PASS|WARN|FAIL|INSUFFICIENT_EVIDENCE|ERROR|SKIPPED)"
    orderings = _grep(rf"[\(\[]\s*['\"]?{names}['\"]?\s*,\s*['\"]?{names}['\"]?\s*,\s*['\"]?{names}",
                      allowed=("audit/policy.py",))
    orderings = [line for line in orderings if " import " not in line]  # importing the names is no ordering
    assert not orderings, "sort by audit.policy.STATUS_ORDER / status_rank:\n" + "\n".join(orderings)


@pytest.mark.parametrize("module", ["audit.report.markdown", "audit.gate", "audit.compare.render"])
def test_one_status_mark(module):
    import importlib

    from audit.policy import STATUS_MARK

    assert getattr(importlib.import_module(module), "STATUS_MARK") is STATUS_MARK
