"""Known-answer tests of audit.analysis.image_properties on generated images (CleanVision style)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from audit.analysis import image_properties as ip
from audit.analysis.image_properties import bin_image_properties, compute_image_properties

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_JPEG = SHARED_DATA / "cifar10-test-jpeg" / "test"


def _rgb(colour, size=(40, 30)) -> np.ndarray:
    return np.asarray(Image.new("RGB", size, colour))


def _props(colour, size=(40, 30), mode=None) -> dict:
    return compute_image_properties(_rgb(colour, size), mode=mode)


def _checkerboard(size=64, square=1) -> np.ndarray:
    index = (np.arange(size)[:, None] // square + np.arange(size)[None, :] // square) % 2
    gray = (index * 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _group(props: dict, name: str) -> str:
    return bin_image_properties(pd.DataFrame([props]))[f"{name}_group"].iloc[0]


def test_columns_and_types():
    props = _props((10, 20, 30))
    assert tuple(props) == ip.PROPERTY_COLUMNS
    assert isinstance(props["image_width"], int) and isinstance(props["image_is_grayscale"], bool)
    assert (props["image_width"], props["image_height"]) == (40, 30)
    assert props["image_aspect_ratio"] == pytest.approx(40 / 30)


def test_black_is_dark_and_white_is_bright():
    black, white = _props((0, 0, 0)), _props((255, 255, 255))
    assert black["image_brightness"] == 0.0 and white["image_brightness"] == pytest.approx(1.0)
    assert _group(black, "image_brightness") == "dark"
    assert _group(white, "image_brightness") == "bright"
    assert _group(_props((128, 128, 128)), "image_brightness") == "mid"
    # perceived luminance: green looks brighter than red, red brighter than blue
    red, green, blue = _props((255, 0, 0)), _props((0, 255, 0)), _props((0, 0, 255))
    assert red["image_brightness"] == pytest.approx(0.299)
    assert green["image_brightness"] == pytest.approx(0.587)
    assert blue["image_brightness"] == pytest.approx(0.114)


def test_flat_images_have_zero_contrast_and_sharpness():
    gray = _props((128, 128, 128))
    assert gray["image_contrast"] == 0.0 and gray["image_sharpness"] == 0.0
    assert _group(gray, "image_contrast") == "low"
    assert _group(gray, "image_sharpness") == "blurry"


def test_half_black_half_white_has_maximal_contrast():
    array = np.zeros((20, 20, 3), dtype=np.uint8)
    array[:, 10:] = 255
    props = compute_image_properties(array)
    assert props["image_contrast"] == pytest.approx(0.5)
    assert _group(props, "image_contrast") == "high"


def test_gray_is_grayscale_and_red_is_colourful():
    gray, red = _props((128, 128, 128)), _props((255, 0, 0))
    assert gray["image_is_grayscale"] is True and gray["image_colourfulness"] == 0.0
    assert _group(gray, "image_colourfulness") == "muted"
    assert red["image_is_grayscale"] is False
    # Hasler-Suesstrunk on a flat image: 0.3 * sqrt(mean_rg^2 + mean_yb^2) = 0.3 * sqrt(255^2 + 127.5^2)
    assert red["image_colourfulness"] == pytest.approx(0.3 * math.hypot(255, 127.5))
    assert _group(red, "image_colourfulness") == "colourful"
    pale = _props((140, 128, 120))  # a slight warm tint: not gray, but muted
    assert pale["image_is_grayscale"] is False and _group(pale, "image_colourfulness") == "muted"


def test_grayscale_tolerance_and_mode():
    near_gray = _props((100, 100 + ip.GRAYSCALE_TOLERANCE, 100))
    assert near_gray["image_is_grayscale"] is True
    tinted = _props((100, 100 + ip.GRAYSCALE_TOLERANCE + 1, 100))
    assert tinted["image_is_grayscale"] is False
    assert _props((100, 150, 100), mode="L")["image_is_grayscale"] is True


def test_checkerboard_is_sharper_than_its_blurred_copy():
    board = _checkerboard(64, square=2)
    blurred = np.asarray(Image.fromarray(board).filter(ImageFilter.GaussianBlur(3)))
    sharp_props = compute_image_properties(board)
    blurred_props = compute_image_properties(blurred)
    assert sharp_props["image_sharpness"] > 10 * blurred_props["image_sharpness"]
    assert _group(sharp_props, "image_sharpness") == "sharp"
    assert _group(blurred_props, "image_sharpness") == "blurry"
    # one-pixel checkerboard: the Laplacian is +-4 * 255 everywhere, variance (4 * 255)^2
    one = compute_image_properties(_checkerboard(16, square=1))
    assert one["image_sharpness"] == pytest.approx((4 * 255) ** 2)


def test_sharpness_of_large_images_is_measured_at_the_reference_scale():
    side = 4 * ip.SHARPNESS_REFERENCE_SIDE
    large = compute_image_properties(_checkerboard(side, square=4))
    reference = compute_image_properties(_checkerboard(ip.SHARPNESS_REFERENCE_SIDE, square=1))
    assert large["image_sharpness"] == pytest.approx(reference["image_sharpness"])
    assert compute_image_properties(_rgb((1, 2, 3), size=(2, 9)))["image_sharpness"] is None


def test_size_and_aspect_ratio_groups():
    frame = pd.DataFrame([_props((0, 0, 0), size=size) for size in [(32, 32), (64, 100), (270, 256), (120, 100),
                                                                      (110, 100), (100, 111)]])
    binned = bin_image_properties(frame)
    assert binned["image_width_group"].tolist() == ["small", "medium", "large", "medium", "medium", "medium"]
    assert binned["image_height_group"].tolist() == ["small", "medium", "large", "medium", "medium", "medium"]
    assert binned["image_aspect_ratio_group"].tolist() == ["square", "portrait", "square", "landscape", "square",
                                                           "portrait"]


def test_bins_are_fixed_not_quantiles():
    # the same image gets the same group whatever else is in the frame
    dark = _props((10, 10, 10))
    alone = _group(dark, "image_brightness")
    mixed = bin_image_properties(pd.DataFrame([dark] + [_props((5, 5, 5))] * 5))
    assert alone == "dark" and mixed["image_brightness_group"].tolist() == ["dark"] * 6


def test_bin_image_properties_columns_and_missing_values():
    frame = pd.DataFrame({"image_brightness": [0.1, 0.25, 0.75, np.nan], "image_is_grayscale": [True] * 4,
                          "other": list("abcd")})
    binned = bin_image_properties(frame)
    assert list(binned.columns) == ["image_brightness", "image_is_grayscale", "other", "image_brightness_group"]
    assert binned["image_brightness_group"].tolist() == ["dark", "mid", "bright", None]
    assert binned["image_is_grayscale"].dtype == bool
    assert "image_brightness_group" not in frame.columns  # input untouched
    full = bin_image_properties(pd.DataFrame([_props((1, 2, 3))]))
    assert set(ip.GROUP_COLUMNS) <= set(full.columns)


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError):
        compute_image_properties(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        compute_image_properties(np.zeros((0, 4, 3), dtype=np.uint8))


def test_large_image_in_several_chunks_matches_numpy():
    rng = np.random.default_rng(3)
    array = rng.integers(0, 256, (1500, 800, 3), dtype=np.uint8)  # 1.2 M pixels: two chunks
    props = compute_image_properties(array)
    values = array.astype(np.float64)
    y = values @ np.array([0.299, 0.587, 0.114])
    rg = values[..., 0] - values[..., 1]
    yb = 0.5 * (values[..., 0] + values[..., 1]) - values[..., 2]
    expected_m = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    assert props["image_brightness"] == pytest.approx(y.mean() / 255, rel=1e-6)
    assert props["image_contrast"] == pytest.approx(y.std() / 255, rel=1e-5)
    assert props["image_colourfulness"] == pytest.approx(expected_m, rel=1e-5)


@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason="../shared/data/cifar10-test-jpeg is absent")
def test_cifar_sample_properties_are_in_range():
    from audit.io.images import read_image

    rows = []
    for path in sorted(CIFAR_JPEG.glob("*/000[0-4].jpg")):
        decoded = read_image(path)
        rows.append(compute_image_properties(decoded.rgb, mode=decoded.mode))
    frame = bin_image_properties(pd.DataFrame(rows))
    assert len(frame) == 50
    assert frame["image_brightness"].between(0, 1).all() and frame["image_contrast"].between(0, 0.5).all()
    assert (frame["image_width_group"] == "small").all()
    assert frame["image_brightness_group"].isin(["dark", "mid", "bright"]).all()
