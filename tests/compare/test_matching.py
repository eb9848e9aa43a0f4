"""Image matching rules: same id + same bytes, relabel, replaced pixels, renamed files, added, removed."""
from __future__ import annotations

import pandas as pd

from audit.compare.matching import match_images


def test_every_kind_of_change_is_named():
    old = pd.DataFrame({"id": ["a", "b", "c", "d", "e"], "label": ["x", "x", "y", "y", "x"],
                        "content_hash": ["h1", "h2", "h3", "h4", "h5"]})
    new = pd.DataFrame({"id": ["a", "b", "c", "moved_d", "f"], "label": ["x", "y", "y", "y", "x"],
                        "content_hash": ["h1", "h2", "h3_new", "h4", "h6"]})
    pairs, method = match_images(old, new)
    assert method == "content_hash+id"
    change = dict(zip(pairs["id_new"].where(pairs["id_new"].notna(), pairs["id_old"]), pairs["change"]))
    assert change == {"a": "unchanged", "b": "relabelled", "c": "replaced", "moved_d": "unchanged", "f": "added",
                      "e": "removed"}
    moved = pairs[pairs["id_new"] == "moved_d"].iloc[0]
    assert moved["renamed"] and moved["id_old"] == "d"


def test_without_hashes_ids_decide():
    old = pd.DataFrame({"id": ["a", "b"], "label": ["x", "x"]})
    new = pd.DataFrame({"id": ["b", "c"], "label": ["y", "x"]})
    pairs, method = match_images(old, new)
    assert method == "id"
    assert sorted(pairs["change"]) == ["added", "relabelled", "removed"]
