"""Data quality on generated images with known answers: duplicates, leakage, defects, concentrations."""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFilter

from audit.analysis._table import GROUP_METRIC_COLUMNS
from audit.analysis.data_quality import (ERROR_BAD_HASH, ERROR_DUPLICATE_IDS, ERROR_EMBEDDINGS_ROWS, ERROR_EMPTY,
                                         ERROR_GROUP_LENGTH, ERROR_HASH_FLOAT, ERROR_MISSING_COLUMNS,
                                         ERROR_SEARCH_NARROWED, ERROR_SETTING, ERROR_UNKNOWN_LABEL,
                                         FINDING_EMBEDDING_APPROXIMATE, FINDING_LINKS_BOUNDED, HASH_COLUMNS,
                                         ISSUES, DataQualityResult, find_data_quality_issues)
from audit.analysis.hashing import compute_perceptual_hashes
from audit.analysis.image_properties import compute_image_properties
from audit.errors import InputError

CLASSES = ("bird", "cat", "dog")
DEFECTS = ("dark", "light", "blurry", "low_information", "grayscale", "odd_size", "odd_aspect_ratio")


def synthetic_image(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    field = rng.normal(128, 50, size=(4, 4, 3)).clip(30, 225).astype(np.uint8)
    image = Image.fromarray(field).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x0, y0 = rng.integers(0, size - 8, 2)
        x1, y1 = x0 + rng.integers(6, size // 2), y0 + rng.integers(6, size // 2)
        colour = tuple(int(c) for c in rng.integers(20, 236, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((int(x0), int(y0), int(x1), int(y1)), fill=colour)
    return np.asarray(image)


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def image_row(rgb: np.ndarray, **fields) -> dict:
    """What the pipeline computes in its single pass: properties, hashes, content hash of the file bytes."""
    row = dict(fields)
    row["content_hash"] = hashlib.sha256(png_bytes(rgb)).hexdigest()
    row.update(compute_image_properties(rgb))
    row.update(compute_perceptual_hashes(rgb))
    return row


def to_table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for column in HASH_COLUMNS:
        table[column] = np.array([int(v) for v in table[column]], dtype=np.uint64)
    return table


def jpeg(rgb, quality):
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def resize(rgb, factor):
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def planted():
    """240 distinct images (site a / b, train / test) plus planted copies and defects, with the truth."""
    rng = np.random.default_rng(0)
    rows, truth = [], {"exact": [], "near": [], "cross_split": [], "defect": {d: [] for d in DEFECTS}}
    base = []
    for k in range(240):
        rgb = synthetic_image(rng)
        base.append(rgb)
        rows.append(image_row(rgb, id=f"img{k:03d}", label=CLASSES[k % 3], site="ab"[k % 2],
                              split="train" if k < 180 else "test"))

    def add(rgb, source, tag, split=None, site=None):
        rows.append(image_row(rgb, id=f"{tag}{len(rows)}", label=rows[source]["label"],
                              site=site or rows[source]["site"], split=split or rows[source]["split"]))
        return len(rows) - 1

    for source in range(0, 10):  # exact copies (same bytes), the same split
        truth["exact"].append((source, add(base[source], source, "exact")))
    for source, make in zip(range(10, 40), [lambda x: resize(x, 0.5), lambda x: resize(x, 2.0),
                                            lambda x: jpeg(x, 50)] * 10):
        truth["near"].append((source, add(make(base[source]), source, "near")))
    for source in range(40, 50):  # 95 % crops
        h, w = base[source].shape[:2]
        x, y = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        truth["near"].append((source, add(base[source][y:y + round(h * .95), x:x + round(w * .95)], source, "crop")))
    for source in range(50, 62):  # train images copied into test: leakage
        copy = add(jpeg(base[source], 80), source, "leak", split="test")
        truth["near"].append((source, copy))
        truth["cross_split"].append((source, copy))
    # Dark images concentrated in site b: 24 of the extra site-b images, 1 in site a.
    for n_dark, site in ((24, "b"), (1, "a")):
        for _ in range(n_dark):
            rgb = (synthetic_image(rng).astype(np.float32) * 0.12).astype(np.uint8)
            truth["defect"]["dark"].append(add(rgb, int(rng.integers(0, 240)), "dark", site=site))
    for _ in range(4):
        rgb = np.clip(synthetic_image(rng).astype(np.float32) * 0.1 + 235, 0, 255).astype(np.uint8)
        truth["defect"]["light"].append(add(rgb, 0, "light"))
    for _ in range(6):
        rgb = np.asarray(Image.fromarray(synthetic_image(rng)).filter(ImageFilter.GaussianBlur(3)))
        truth["defect"]["blurry"].append(add(rgb, 1, "blurry"))
    for _ in range(3):
        rgb = np.full((48, 48, 3), int(rng.integers(60, 200)), dtype=np.uint8)
        rgb[int(rng.integers(0, 48)), int(rng.integers(0, 48))] += 3
        truth["defect"]["low_information"].append(add(rgb, 2, "flat"))
    for _ in range(5):
        gray = synthetic_image(rng).mean(axis=2, keepdims=True).astype(np.uint8)
        truth["defect"]["grayscale"].append(add(np.repeat(gray, 3, axis=2), 3, "gray"))
    for _ in range(5):
        tiny = np.asarray(Image.fromarray(synthetic_image(rng)).resize((12, 12), Image.Resampling.BOX))
        truth["defect"]["odd_size"].append(add(tiny, 4, "tiny"))
    for _ in range(4):
        rgb = np.asarray(Image.fromarray(synthetic_image(rng)).resize((130, 40)))
        truth["defect"]["odd_aspect_ratio"].append(add(rgb, 5, "wide"))
    table = to_table(rows)
    result = find_data_quality_issues(table, group_labels={"site": table["site"]}, classes=CLASSES)
    return table, result, truth


def linked(result, a, b):
    pairs = set(zip(result.pairs["i"].tolist(), result.pairs["j"].tolist()))
    return (min(a, b), max(a, b)) in pairs


def test_result_shape(planted):
    table, result, _ = planted
    assert isinstance(result, DataQualityResult)
    assert result.issues == tuple(i for i in ISSUES if i != "outlier")
    assert len(result.per_image) == len(table)
    assert result.per_image["id"].tolist() == table["id"].tolist()
    for issue in result.issues:
        flags = result.per_image[f"is_{issue}_issue"]
        scores = result.per_image[f"{issue}_score"]
        assert flags.dtype == bool
        known = scores.notna()
        assert ((scores[known] >= 0) & (scores[known] <= 1)).all(), issue
        # Every score is below 0.5 exactly for flagged images.
        assert ((scores[known] < 0.5) == flags[known]).all(), issue
    sets = result.per_image["duplicate_set"]
    assert sets.dtype == object
    assert all(v is None or (isinstance(v, str) and v.isdigit()) for v in sets)
    ids = sorted({v for v in sets if v is not None})
    assert len({len(v) for v in ids}) == 1  # zero-padded: string order is set order
    assert ids == [f"{k:0{len(ids[0])}d}" for k in range(len(ids))]


def test_exact_copies_all_found(planted):
    _, result, truth = planted
    per_image = result.per_image
    for source, copy in truth["exact"]:
        assert per_image["is_exact_duplicate_issue"][source] and per_image["is_exact_duplicate_issue"][copy]
        assert per_image["exact_duplicate_score"][copy] == 0.0
        # exact copies are near duplicates too, in one set
        assert per_image["is_near_duplicate_issue"][copy]
        assert per_image["duplicate_set"][source] == per_image["duplicate_set"][copy]
        assert linked(result, source, copy)
    n_exact = 2 * len(truth["exact"])
    assert int(per_image["is_exact_duplicate_issue"].sum()) == n_exact
    assert result.summary["n_exact_duplicate_groups"] == len(truth["exact"])


def test_near_copies_found_with_high_precision(planted):
    _, result, truth = planted
    expected = {(min(a, b), max(a, b)) for a, b in truth["near"] + truth["exact"]}
    found = set(zip(result.pairs["i"].tolist(), result.pairs["j"].tolist()))
    recall = len(expected & found) / len(expected)
    precision = len(expected & found) / len(found)
    assert recall >= 0.95, (recall, sorted(expected - found))
    assert precision >= 0.95, (precision, sorted(found - expected))


def test_every_member_of_a_set_is_flagged_and_carries_its_id(planted):
    _, result, _ = planted
    per_image = result.per_image
    members = per_image["duplicate_set"].notna()
    assert (members == per_image["is_near_duplicate_issue"]).all()
    for _, pair in result.pairs.iterrows():
        assert per_image["duplicate_set"][pair["i"]] == per_image["duplicate_set"][pair["j"]]
    assert result.summary["n_duplicate_sets"] == per_image["duplicate_set"].nunique()
    assert result.summary["n_images_in_duplicate_sets"] == int(members.sum())


def test_leakage_lists_the_planted_cross_split_copies(planted):
    table, result, truth = planted
    leakage = result.leakage
    listed = {(p["id_a"], p["id_b"]) for p in leakage["pairs"]}
    for source, copy in truth["cross_split"]:
        assert (table["id"][source], table["id"][copy]) in listed
    assert leakage["n_pairs"] == len(leakage["pairs"]) >= len(truth["cross_split"])
    assert leakage["by_split_pair"] == [{"split_a": "test", "split_b": "train", "n_pairs": leakage["n_pairs"]}]
    assert any("cross splits" in sentence for sentence in result.findings)


@pytest.mark.parametrize("defect", DEFECTS)
def test_planted_defects_flagged(planted, defect):
    _, result, truth = planted
    flags = result.per_image[f"is_{defect}_issue"]
    assert flags[truth["defect"][defect]].all(), defect
    # The 240 distinct base images have no defects.
    assert not flags[:240].any(), (defect, np.flatnonzero(flags[:240]))


def test_group_table_rates_intervals_and_verdicts(planted):
    table, result, _ = planted
    group_table = result.group_table
    assert tuple(group_table.columns) == GROUP_METRIC_COLUMNS
    assert set(group_table["metric"]) == {f"issue_rate:{issue}" for issue in result.issues}
    dark = group_table[group_table["metric"] == "issue_rate:dark"].set_index(["attribute", "group", "class"])
    flags = result.per_image["is_dark_issue"]
    overall = dark.loc[("all", "all", "")]
    assert overall["n"] == len(table) and overall["value"] == pytest.approx(flags.mean())
    assert overall["verdict"] == ""
    for name in CLASSES:
        row = dark.loc[("all", "all", name)]
        in_class = table["label"] == name
        assert row["n"] == in_class.sum() and row["value"] == pytest.approx(flags[in_class].mean())
    site_b = dark.loc[("site", "b", "")]
    assert site_b["value"] == pytest.approx(flags[table["site"] == "b"].mean())
    assert site_b["ci_low"] <= site_b["value"] <= site_b["ci_high"]
    assert site_b["verdict"] == "worse_than_rest"
    assert dark.loc[("site", "a", "")]["verdict"] == "no_evidence_of_gap"
    # insufficient_data exactly when insufficient_evidence
    assert ((group_table["verdict"] == "insufficient_data") == group_table["insufficient_evidence"]).all()


def test_findings_name_the_concentration(planted):
    table, _, _ = planted
    result = find_data_quality_issues(table, group_labels={"site": table["site"]}, classes=CLASSES,
                                      max_findings=50)
    flags = result.per_image["is_dark_issue"]
    in_b = table["site"] == "b"
    rate, rest = flags[in_b].mean(), flags[~in_b].mean()
    expected = (f"Dark images are {rate / rest:.1f}x as common in site=b ({100 * rate:.0f} %) as in the rest "
                f"({100 * rest:.2f} %).")
    assert expected in result.findings


def test_small_groups_are_insufficient_data(planted):
    table, _, _ = planted
    tiny_group = pd.Series(["x"] * 10 + ["y"] * (len(table) - 10))
    result = find_data_quality_issues(table, group_labels={"g": tiny_group}, classes=CLASSES)
    rows = result.group_table[(result.group_table["attribute"] == "g") & (result.group_table["group"] == "x")]
    assert (rows["verdict"] == "insufficient_data").all() and rows["insufficient_evidence"].all()
    # A data set smaller than min_group_size: the whole-data-set rows are insufficient too.
    small = find_data_quality_issues(table.iloc[:20], classes=CLASSES)
    overall = small.group_table[small.group_table["attribute"] == "all"]
    assert (overall["verdict"] == "insufficient_data").all()


def test_to_dict_is_json_safe(planted):
    _, result, _ = planted
    payload = result.to_dict()
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text)["summary"]["issues"]["dark"] == int(result.per_image["is_dark_issue"].sum())
    assert set(payload) == {"issues", "summary", "leakage", "findings", "settings", "metrics"}
    assert payload["metrics"]["issue_rate:dark"]["higher_is_better"] is False


def test_embeddings_add_links_and_outliers(planted):
    table, _, truth = planted
    rng = np.random.default_rng(1)
    n = len(table)
    centres = rng.normal(size=(12, 32))
    embeddings = centres[rng.integers(0, 12, n)] + rng.normal(scale=0.2, size=(n, 32))
    a, b = 100, 200  # unrelated pixels, identical embeddings: an embedding-only link
    embeddings[b] = embeddings[a] * 1.0001
    embeddings[7] = rng.normal(size=32) * 3  # far from every cluster
    result = find_data_quality_issues(table, embeddings=embeddings, classes=CLASSES)
    assert "outlier" in result.issues
    assert result.per_image["is_outlier_issue"][7]
    assert result.per_image["is_outlier_issue"].sum() <= np.ceil(0.01 * n) + 1
    pair = result.pairs[(result.pairs["i"] == a) & (result.pairs["j"] == b)]
    assert pair["kind"].tolist() == ["embedding"] and pd.isna(pair["hash_distance"].iloc[0])
    assert result.per_image["duplicate_set"][a] == result.per_image["duplicate_set"][b]
    # exact copies keep their strongest evidence
    source, copy = truth["exact"][0]
    row = result.pairs[(result.pairs["i"] == source) & (result.pairs["j"] == copy)]
    assert row["kind"].tolist() == ["exact"]


def test_no_split_column_means_no_leakage(planted):
    table, _, _ = planted
    result = find_data_quality_issues(table.drop(columns="split"), classes=CLASSES)
    assert result.leakage == {"n_pairs": 0, "by_split_pair": [], "pairs": []}


def test_hashes_stored_as_signed_or_python_ints_give_the_same_links(planted):
    table, result, _ = planted
    signed = table.copy()
    for column in HASH_COLUMNS:
        signed[column] = table[column].to_numpy().view(np.int64)
    again = find_data_quality_issues(signed, group_labels={"site": table["site"]}, classes=CLASSES)
    pd.testing.assert_frame_equal(again.pairs, result.pairs)
    objects = table.copy()
    objects["phash"] = [int(v) for v in table["phash"]]
    assert len(find_data_quality_issues(objects, classes=CLASSES).pairs) == len(result.pairs)


def test_input_errors(planted):
    table, _, _ = planted
    with pytest.raises(InputError) as error:
        find_data_quality_issues(table.iloc[:0], classes=CLASSES)
    assert str(error.value) == ERROR_EMPTY
    with pytest.raises(InputError) as error:
        find_data_quality_issues(table.drop(columns=["phash", "image_sharpness"]), classes=CLASSES)
    assert str(error.value) == ERROR_MISSING_COLUMNS.format(columns="image_sharpness, phash")
    duplicated = table.copy()
    duplicated.loc[5, "id"] = duplicated.loc[4, "id"]
    with pytest.raises(InputError) as error:
        find_data_quality_issues(duplicated, classes=CLASSES)
    assert str(error.value) == ERROR_DUPLICATE_IDS.format(value=table["id"][4])
    with pytest.raises(InputError) as error:
        find_data_quality_issues(table, classes=("bird", "cat"))
    first_dog = int(np.flatnonzero(table["label"] == "dog")[0])
    assert str(error.value) == ERROR_UNKNOWN_LABEL.format(row=first_dog, id=table["id"][first_dog], label="dog")
    with pytest.raises(InputError) as error:
        find_data_quality_issues(table, group_labels={"site": table["site"][:3]}, classes=CLASSES)
    assert str(error.value) == ERROR_GROUP_LENGTH.format(name="site", rows=3, n=len(table))
    with pytest.raises(InputError) as error:
        find_data_quality_issues(table, embeddings=np.ones((3, 4)), classes=CLASSES)
    assert str(error.value) == ERROR_EMBEDDINGS_ROWS.format(rows=3, n=len(table))
    with pytest.raises(InputError) as error:
        find_data_quality_issues(table, dark_threshold=1.5, classes=CLASSES)
    assert str(error.value) == ERROR_SETTING.format(name="dark_threshold", what="between 0 and 1", value=1.5)
    with pytest.raises(InputError) as error:
        find_data_quality_issues(table, phash_max_distance=64, classes=CLASSES)
    assert str(error.value) == ERROR_SETTING.format(name="phash_max_distance", what="an integer from 0 to 63",
                                                    value=64)
    bad = table.copy()
    bad["dhash"] = bad["dhash"].astype(object)
    bad.loc[2, "dhash"] = "abc"
    with pytest.raises(InputError) as error:
        find_data_quality_issues(bad, classes=CLASSES)
    assert str(error.value) == ERROR_BAD_HASH.format(column="dhash", row=2)
    floats = table.copy()
    floats["chash"] = floats["chash"].astype(np.float64)
    with pytest.raises(InputError) as error:
        find_data_quality_issues(floats, classes=CLASSES)
    assert str(error.value) == ERROR_HASH_FLOAT.format(column="chash")


def test_missing_property_values_are_not_flagged(planted):
    table, _, _ = planted
    holes = table.copy()
    holes.loc[0, "image_sharpness"] = None
    holes.loc[1, "image_brightness"] = np.nan
    result = find_data_quality_issues(holes, classes=CLASSES)
    assert not result.per_image["is_blurry_issue"][0] and np.isnan(result.per_image["blurry_score"][0])
    assert not result.per_image["is_dark_issue"][1] and not result.per_image["is_light_issue"][1]


def test_findings_are_limited_and_ranked(planted):
    table, result, _ = planted
    concentrations = [s for s in result.findings if "cross splits" not in s]
    assert len(concentrations) == 5
    none = find_data_quality_issues(table, classes=CLASSES, max_findings=0)
    assert all("cross splits" in s for s in none.findings)


def test_search_narrowed_to_fit_the_budget(planted):
    table, full, _ = planted
    result = find_data_quality_issues(table, classes=CLASSES, max_hash_comparisons=2000)
    used = result.settings["phash_search_distance"]
    assert used < 16
    assert ERROR_SEARCH_NARROWED.format(used=used, wanted=16) in result.findings
    assert full.settings["phash_search_distance"] == 16
    # Exact copies are still found whatever the budget.
    assert result.per_image["is_exact_duplicate_issue"].sum() == full.per_image["is_exact_duplicate_issue"].sum()
    assert len(result.pairs) <= len(full.pairs)


def test_group_labels_missing_values_form_the_missing_group(planted):
    table, _, _ = planted
    labels = pd.Series(["x"] * (len(table) - 40) + [None] * 40)
    result = find_data_quality_issues(table, group_labels={"g": labels}, classes=CLASSES)
    groups = set(result.group_table.loc[result.group_table["attribute"] == "g", "group"])
    assert groups == {"x", "<missing>"}


def test_rows_without_content_hash_are_not_exact_duplicates(planted):
    table, _, _ = planted
    blank = table.copy()
    blank["content_hash"] = None
    result = find_data_quality_issues(blank, classes=CLASSES)
    assert not result.per_image["is_exact_duplicate_issue"].any()
    assert result.per_image["is_near_duplicate_issue"].any()


@pytest.mark.parametrize("size", [32, 64, 96])
def test_ninety_percent_crops_found_centred_and_off_centre(size):
    # 90 % crops, centred and at a random offset, of generated images: found by the hashes alone (the
    # corner-crop rule), with no false links among the untouched images.
    rng = np.random.default_rng(11)
    bases = [synthetic_image(rng, size=size) for _ in range(60)]
    rows = [image_row(rgb, id=f"img{k}", label=CLASSES[k % 3]) for k, rgb in enumerate(bases)]
    truth = []
    keep = round(size * 0.9)
    for source in range(40):
        if source < 20:
            x = y = (size - keep) // 2
        else:
            x, y = (int(v) for v in rng.integers(0, size - keep + 1, 2))
        rows.append(image_row(bases[source][y:y + keep, x:x + keep], id=f"crop{source}",
                              label=rows[source]["label"]))
        truth.append((source, len(rows) - 1))
    result = find_data_quality_issues(to_table(rows), classes=CLASSES)
    pairs = set(zip(result.pairs["i"].tolist(), result.pairs["j"].tolist()))
    for name, chunk in (("centred", truth[:20]), ("off-centre", truth[20:])):
        recall = np.mean([(s, c) in pairs for s, c in chunk])
        assert recall >= 0.9, name
    wrong = pairs - set(truth)
    assert len(wrong) <= 0.05 * len(pairs)
    assert result.settings["corner_phash_search_distance"] == 12


def test_corner_hash_columns_are_optional(planted):
    # Tables written before the corner hashes existed still work (whole/centre rule only).
    table, full, _ = planted
    old = table.drop(columns=[c for c in HASH_COLUMNS if c.split("_")[-1] in ("nw", "ne", "sw", "se")])
    result = find_data_quality_issues(old, classes=CLASSES)
    assert result.settings["corner_phash_search_distance"] is None
    assert result.per_image["is_exact_duplicate_issue"].sum() == full.per_image["is_exact_duplicate_issue"].sum()
    assert set(zip(result.pairs["i"], result.pairs["j"])) <= set(zip(full.pairs["i"], full.pairs["j"]))


def _reference_merge_links(links):
    """The pandas merge of link kinds that _merge_links replaced (concatenate, sort, group, de-duplicate)."""
    from audit.analysis.data_quality import LINK_EMBEDDING, LINK_EXACT, LINK_HASH

    frames = [pd.DataFrame({"i": i, "j": j, "kind": kind, "hash_distance": d, "similarity": s})
              for kind, i, j, d, s in links if len(i)]
    links = pd.concat(frames, ignore_index=True)
    rank = links["kind"].map({LINK_EXACT: 0, LINK_HASH: 1, LINK_EMBEDDING: 2})
    links = links.assign(_rank=rank).sort_values(["i", "j", "_rank"], kind="stable")
    similarity = links.groupby(["i", "j"], sort=False)["similarity"].transform("max")
    links = links.assign(similarity=similarity).drop_duplicates(["i", "j"], keep="first").drop(columns="_rank")
    distance = links["hash_distance"].astype("Int64")
    distance[distance < 0] = pd.NA
    links["hash_distance"] = distance
    return links.sort_values(["i", "j"]).reset_index(drop=True)


def test_merge_links_equals_the_pandas_merge():
    from audit.analysis.data_quality import LINK_EMBEDDING, LINK_EXACT, LINK_HASH, _merge_links

    rng = np.random.default_rng(2)

    def pairs(size):
        i = rng.integers(0, 40, size)
        j = i + rng.integers(1, 5, size)
        return i.astype(np.int64), j.astype(np.int64)

    exact, hashed, embedded = pairs(30), pairs(400), pairs(300)
    similarity = np.where(rng.random(300) < 0.2, np.nan, rng.random(300))
    links = [(LINK_EXACT, *exact, 0, np.nan), (LINK_HASH, *hashed, rng.integers(0, 17, 400), np.nan),
             (LINK_EMBEDDING, *embedded, -1, similarity)]
    pd.testing.assert_frame_equal(_merge_links(links), _reference_merge_links(links), check_exact=True)
    no_hash = [links[0], (LINK_HASH, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.nan),
               links[2]]
    pd.testing.assert_frame_equal(_merge_links(no_hash), _reference_merge_links(no_hash), check_exact=True)


def test_rule_checks_dhash_and_chash_only_where_needed_with_the_same_result():
    from audit.analysis.data_quality import _CORNER_ALIGNMENTS, _rule
    from audit.analysis.near_duplicates import popcount

    rng = np.random.default_rng(5)
    n = 300
    base = rng.integers(0, 2 ** 63, 5, dtype=np.uint64)[rng.integers(0, 5, n)]  # five clusters of images
    hashes = {}
    for region in [""] + [a or b for a, b in _CORNER_ALIGNMENTS]:
        for name in ("phash", "dhash", "chash"):
            # a few flipped bits from one base: many pairs near every limit
            flips = rng.integers(0, 64, (n, 4)).astype(np.uint64)
            hashes[f"{name}{region}"] = base ^ np.bitwise_or.reduce(np.uint64(1) << flips, axis=1)
    i, j = np.triu_indices(n, 1)
    limits = (6, 5, 5)
    passes, distance = _rule(hashes, i, j, _CORNER_ALIGNMENTS, limits)
    # reference: every distance of every alignment
    ok_any, best, best_ok = np.zeros(i.size, bool), np.full(i.size, 64), np.full(i.size, 64)
    for a, b in _CORNER_ALIGNMENTS:
        p, d, c = (popcount(hashes[f"{h}{a}"][i] ^ hashes[f"{h}{b}"][j]).astype(np.int64)
                   for h in ("phash", "dhash", "chash"))
        ok = (p <= limits[0]) & (d <= limits[1]) & (c <= limits[2])
        ok_any |= ok
        best = np.minimum(best, p)
        best_ok = np.where(ok, np.minimum(best_ok, p), best_ok)
    assert 0 < passes.sum() < passes.size
    assert np.array_equal(passes, ok_any) and np.array_equal(distance, np.where(ok_any, best_ok, best))


def mutual_near_duplicates(n_cluster: int, n_other: int, seed: int = 0) -> pd.DataFrame:
    """A table of ``n_cluster`` distinct images whose every hash is within 1 bit of one base image's (all
    mutual near duplicates, no two identical), among ``n_other`` unrelated images."""
    rng = np.random.default_rng(seed)
    n = n_cluster + n_other
    table = pd.DataFrame({"id": [f"img{k}" for k in range(n)], "label": [CLASSES[k % 3] for k in range(n)],
                          "content_hash": [f"{k:064x}" for k in range(n)], "image_width": 64, "image_height": 64,
                          "image_brightness": 0.5, "image_contrast": 0.2, "image_sharpness": 500.0,
                          "image_is_grayscale": False})
    for column in HASH_COLUMNS:
        values = rng.integers(0, 2 ** 63, size=n, dtype=np.int64).astype(np.uint64)
        values[:n_cluster] = values[0] ^ (np.uint64(1) << rng.integers(0, 64, size=n_cluster).astype(np.uint64))
        table[column] = values
    return table


def test_cluster_of_mutual_near_duplicates_is_bounded(monkeypatch):
    from audit.analysis import data_quality, near_duplicates

    monkeypatch.setattr(near_duplicates, "MAX_LINKS_PER_HASH", 8)
    monkeypatch.setattr(data_quality, "MAX_LINKS_PER_HASH", 8)
    table = mutual_near_duplicates(400, 100)
    result = find_data_quality_issues(table, classes=CLASSES)
    member = result.per_image["is_near_duplicate_issue"].to_numpy()
    # the whole cluster is one duplicate set, the others are in none
    assert member[:400].all() and not member[400:].any()
    assert result.per_image["duplicate_set"].iloc[:400].nunique() == 1
    # far fewer links than the 79,800 pairs of the cluster, and what was left out is counted and said
    bounded = result.summary["n_hash_pairs_bounded"]
    assert bounded > 0
    assert len(result.pairs) < 400 * 399 / 2 / 4
    assert result.settings["max_links_per_hash"] == 8
    assert FINDING_LINKS_BOUNDED.format(n_pairs=bounded, cap=8) in result.findings
    # the same sets as without the bound
    monkeypatch.setattr(near_duplicates, "MAX_LINKS_PER_HASH", 10_000)
    monkeypatch.setattr(data_quality, "MAX_LINKS_PER_HASH", 10_000)
    unbounded = find_data_quality_issues(table, classes=CLASSES)
    assert unbounded.summary["n_hash_pairs_bounded"] == 0
    assert len(unbounded.pairs) == 400 * 399 / 2
    pd.testing.assert_series_equal(unbounded.per_image["duplicate_set"], result.per_image["duplicate_set"])
    assert not any(text.startswith(FINDING_LINKS_BOUNDED[:30]) for text in unbounded.findings)


def test_uncrowded_data_is_not_bounded(planted):
    _, result, _ = planted
    assert result.summary["n_hash_pairs_bounded"] == 0
    assert result.settings["max_links_per_hash"] == 256


def test_embedding_search_is_approximate_above_its_exact_budget(planted, monkeypatch):
    from audit.analysis import near_duplicates

    table, _, _ = planted
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(len(table), 8))
    exact = find_data_quality_issues(table, classes=CLASSES, embeddings=embeddings)
    assert exact.settings["embedding_search"] == "exact"
    monkeypatch.setattr(near_duplicates, "EMBEDDING_EXACT_MAX_PAIRS", 0)
    approximate = find_data_quality_issues(table, classes=CLASSES, embeddings=embeddings)
    assert approximate.settings["embedding_search"] == "approximate_hnsw"
    assert FINDING_EMBEDDING_APPROXIMATE.format(n=len(table)) in approximate.findings
    assert FINDING_EMBEDDING_APPROXIMATE.format(n=len(table)) not in exact.findings
