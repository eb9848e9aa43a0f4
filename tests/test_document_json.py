"""audit.json's text layout (audit.io.atomic.dumps_document): readable key by key, exact round trip, fast C encoding."""
import json

import numpy as np
import pytest

from audit.io.atomic import dumps_document
from audit.types import json_safe


def test_round_trip_is_exact_and_top_levels_are_one_key_per_line():
    document = {"schema_version": "2.0", "analyses": {"label_noise": {"joint": [[0.25, 0.75], [1.0, 0.0]],
                                                                       "n": 3, "name": "ç\"<x>"}},
                "empty": {}, "list": [{"a": 1}]}
    text = dumps_document(document)
    assert json.loads(text) == document
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and text.endswith("}\n")
    assert '  "schema_version": "2.0",' in lines
    assert '      "joint": [[0.25, 0.75], [1.0, 0.0]],' in lines  # third level: one key per line, value compact
    assert '  "empty": {},' in lines
    assert '  "list": [{"a": 1}]' in lines


def test_non_finite_numbers_are_refused():
    with pytest.raises(ValueError):
        dumps_document({"a": {"b": float("nan")}})


def test_json_safe_converts_large_matrices_without_changing_values():
    matrix = np.arange(12, dtype=np.int64).reshape(3, 4)
    floats = np.linspace(0, 1, 6).reshape(2, 3)
    assert json_safe(matrix) == matrix.tolist() and type(json_safe(matrix)[0][0]) is int
    assert json_safe(floats) == floats.tolist()
    with_nan = np.array([1.0, np.nan, np.inf])
    assert json_safe(with_nan) == [1.0, None, None]
    assert json_safe(np.array([True, False])) == [True, False]
    assert json_safe([1, 2, True]) == [1, 2, True]


def test_json_safe_cleans_matrices_given_as_lists_of_rows():
    assert json_safe([[1, 2], [3, 4]]) == [[1, 2], [3, 4]]
    assert json_safe([[0.5, 2], [3, 1e-9]]) == [[0.5, 2], [3, 1e-9]]
    assert json_safe([[1.0, float("nan")], [float("-inf"), 2.0]]) == [[1.0, None], [None, 2.0]]
    assert json_safe([[1, True], [np.int64(3), None]]) == [[1, True], [3, None]]
    assert type(json_safe([[np.float32(0.5)]])[0][0]) is float
