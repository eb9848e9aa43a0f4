"""audit.display: the one sort order of group values and the one set of words for metric names (issue 12)."""
import pandas as pd
import pytest

from audit.display import (LEAKAGE_NOT_CHECKED_NO_SPLITS, LEAKAGE_NOT_CHECKED_ONE_SPLIT, attribute_label, group_ranks,
                           group_sort_key, is_data_rate, is_ordinal, issue_label, join_names, leakage_not_checked,
                           metric_label, sort_groups, summary_label, tied_extremes)
from audit.report import figures


@pytest.mark.parametrize("values, expected", [
    (["0-2", "10-19", "20-29", "3-9", "more than 70", "<missing>"],
     ["0-2", "3-9", "10-19", "20-29", "more than 70", "<missing>"]),
    (["65+", "30-64", "<18", "18-29"], ["<18", "18-29", "30-64", "65+"]),
    (["10", "2", "1"], ["1", "2", "10"]),
    (["(0.5, 1.5]", "(-1.5, -0.5]", "(-0.5, 0.5]"], ["(-1.5, -0.5]", "(-0.5, 0.5]", "(0.5, 1.5]"]),
    (["1,000-1,999", "200-999"], ["200-999", "1,000-1,999"]),
    (["bright", "dark", "mid"], ["dark", "mid", "bright"]),
    (["high", "low", "normal"], ["low", "normal", "high"]),
    (["White", "black", "Asian"], ["Asian", "black", "White"]),
    (["Male & 10-19", "Female & 10-19", "Female & 3-9"], ["Female & 3-9", "Female & 10-19", "Male & 10-19"]),
])
def test_groups_sort_by_number_then_text(values, expected):
    assert sort_groups(values) == expected
    assert sorted(values, key=group_sort_key) == expected
    assert group_ranks(values) == {v: i for i, v in enumerate(expected)}


def test_ordinal_attributes():
    assert is_ordinal(["0-2", "3-9", "<missing>"])
    assert is_ordinal(["dark", "mid", "bright"])
    assert not is_ordinal(["Black", "0-2"])
    assert not is_ordinal(["<missing>"])
    assert not is_ordinal(["0-2 & Black"])  # intersections are ranked by value, not laid out as a scale


def test_metric_and_summary_words():
    assert metric_label("issue_rate:dark") == "share flagged as too dark"
    assert metric_label("issue_rate:some_new_issue") == "share flagged as some new issue"
    assert metric_label("macro_f1") == "macro-F1"
    assert metric_label("balanced_accuracy") == "balanced accuracy"
    assert metric_label("expected_calibration_error") == "calibration error (ECE)"
    assert metric_label("a_new_metric") == "a new metric"
    assert issue_label("odd_aspect_ratio") == "odd aspect ratio"
    assert summary_label("leakage.n_pairs") == "near-duplicate pairs across splits (train/test leakage)"
    assert summary_label("n_images_in_duplicate_sets") == "images in near-duplicate sets"
    assert summary_label("something.n_widgets") == "number of widgets"
    assert [m for m in ("accuracy", "issue_rate:dark", "label_disagreement_rate", "estimated_noise_rate",
                        "annotation_agreement", "recall", "model_error_rate") if is_data_rate(m)] == \
        ["issue_rate:dark", "label_disagreement_rate", "estimated_noise_rate", "annotation_agreement"]


def test_leakage_needs_two_splits():
    assert leakage_not_checked([]) == LEAKAGE_NOT_CHECKED_NO_SPLITS
    assert leakage_not_checked(None) == LEAKAGE_NOT_CHECKED_NO_SPLITS
    assert leakage_not_checked(["test"]) == LEAKAGE_NOT_CHECKED_ONE_SPLIT.format(split="test")
    assert leakage_not_checked(["train", "test"]) is None


def test_tied_extremes_never_pick_one_class_at_random():
    assert tied_extremes({"a": 5, "b": 5}) == {"smallest": ["a", "b"], "largest": ["a", "b"], "balanced": True}
    assert tied_extremes({"a": 9, "b": 9, "c": 2, "d": 0}) == {"smallest": ["c"], "largest": ["a", "b"],
                                                               "balanced": False}
    assert tied_extremes({"a": 0}) == {"smallest": [], "largest": [], "balanced": False}
    assert join_names(["a"]) == "a" and join_names(["a", "b"]) == "a and b"
    assert join_names(list("abcdefg"), limit=3) == "a, b, c and 4 more"


def test_figures_list_groups_in_one_order():
    rows = pd.DataFrame({"group": ["0-2", "10-19", "3-9"], "n": [5, 5, 5], "value": [0.5, 0.5, 0.9],
                         "ci_low": [0.4] * 3, "ci_high": [0.95] * 3, "verdict": [""] * 3,
                         "insufficient_evidence": [False] * 3})
    assert figures.sort_rows(rows, "value")["group"].tolist() == ["0-2", "10-19", "3-9"]  # value, then natural
    assert figures.order_metric_rows(rows)["group"].tolist() == ["0-2", "3-9", "10-19"]  # ordinal: natural
    named = rows.assign(group=["b", "a", "c"])
    assert figures.order_metric_rows(named)["group"].tolist() == ["a", "b", "c"]  # worst first, ties by name
    groups = [{"group": g, "n": n} for g, n in (("10-19", 3), ("0-2", 9), ("3-9", 3))]
    assert [g["group"] for g in figures.groups_in_display_order(groups)] == ["0-2", "3-9", "10-19"]
    sized = [{"group": g, "n": n} for g, n in (("b", 3), ("a", 3), ("c", 9))]
    assert [g["group"] for g in figures.groups_in_display_order(sized)] == ["c", "a", "b"]
    fig = figures.group_shares_figure([{**g, "share": 0.1, "ci_low": 0.0, "ci_high": 0.2} for g in groups],
                                      attribute="age")
    assert list(fig.data[0].y) == ["0-2", "3-9", "10-19"]


def test_reference_lines_are_named_in_the_legend_not_by_overlapping_text():
    rows = pd.DataFrame({"group": ["a", "b"], "n": [50, 50], "value": [0.7, 0.9], "ci_low": [0.6, 0.8],
                         "ci_high": [0.8, 0.95], "verdict": ["worse_than_rest", "no_evidence_of_gap"],
                         "insufficient_evidence": [False, False]})
    fig = figures.group_metric_figure(rows, metric="accuracy", attribute="x", overall=0.8, threshold=0.81)
    assert not fig.layout.annotations  # "policy" printed over "whole data" before
    legend = [t.name for t in fig.data if t.mode == "lines"]
    assert legend == ["whole data", "policy threshold"]
    assert [s.line.dash for s in fig.layout.shapes] == ["dash", "dot"]
    # the legend is a row under the title, inside the top margin: never over the title
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yanchor == "bottom"
    assert fig.layout.title.yref == "container" and fig.layout.title.yanchor == "top"
    assert fig.layout.margin.t >= 60


def test_pixel_attributes_in_words_metadata_as_given():
    assert attribute_label("image_brightness_group") == "image brightness"
    assert attribute_label("image_is_grayscale") == "grayscale image"
    assert attribute_label("age & image_sharpness_group") == "age & image sharpness"
    assert attribute_label("image_new_thing_group") == "image new thing"
    # the user's own columns (no image_ prefix: the contract reserves it for the engine) are never rewritten
    assert [attribute_label(a) for a in ("skin_group", "race", "all")] == ["skin_group", "race", "all"]
    fig = figures.association_figure([{"attribute": "image_contrast_group", "cramers_v": 0.1, "significant": False}])
    assert list(fig.data[0].y) == ["image contrast"]


def test_label_metric_descriptions_name_metrics_in_words():
    """The app shows these descriptions under the Fairness metric picker: no raw metric names there."""
    from audit.analysis.label_noise import METRIC_DESCRIPTIONS

    for entry in METRIC_DESCRIPTIONS.values():
        assert "model_error_rate" not in entry["description"], entry
        assert "label_disagreement_rate" not in entry["description"], entry
