"""Sidecar validation, precedence and image preprocessing (known answers on tiny arrays)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from audit.errors import ModelError
from audit.model import sidecar as sc
from audit.model.architectures import CIFAR10_CLASSES
from audit.model import inference as inf
from audit.model.inference import resolve_preprocessing
from audit.model.sidecar import Preprocessing, load_sidecar, preprocess_batch, preprocess_image

VALID = {
    "classes": ["cat", "dog"],
    "input_size": [2, 2],
    "center_crop": 1.0,
    "channel_order": "RGB",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "output": "logits",
}


def write(tmp_path, data, name="p.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def expect_error(path, message):
    with pytest.raises(ModelError) as info:
        load_sidecar(path)
    assert str(info.value) == message
    return info.value


def test_valid_sidecar_round_trip(tmp_path):
    p = load_sidecar(write(tmp_path, VALID))
    assert p == Preprocessing(classes=("cat", "dog"), input_size=(2, 2), center_crop=1.0, channel_order="RGB",
                              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), scale=None, output="logits")
    assert p.to_dict() == VALID
    assert load_sidecar(write(tmp_path, p.to_dict(), "again.json")) == p


def test_optional_keys_default(tmp_path):
    p = load_sidecar(write(tmp_path, {"input_size": [4, 3], "mean": [1, 2, 3], "scale": 0.5,
                                      "output": "probabilities"}))
    assert p.classes is None and p.center_crop == 1.0 and p.channel_order == "RGB" and p.std is None
    assert p.to_dict()["scale"] == 0.5 and "std" not in p.to_dict()


def test_unreadable(tmp_path):
    path = write(tmp_path, "{not json")
    with pytest.raises(ModelError) as info:
        load_sidecar(path)
    prefix = sc.ERROR_SIDECAR_UNREADABLE.split("{reason}")[0].format(file=path)
    assert str(info.value).startswith(prefix) and str(path) in str(info.value)
    missing = tmp_path / "absent.json"
    with pytest.raises(ModelError, match="Cannot read the preprocessing file"):
        load_sidecar(missing)


def test_not_object(tmp_path):
    path = write(tmp_path, [1, 2])
    expect_error(path, sc.ERROR_SIDECAR_NOT_OBJECT.format(file=path, found="list"))


def test_unknown_key(tmp_path):
    path = write(tmp_path, {**VALID, "mena": [0, 0, 0]})
    error = expect_error(path, sc.ERROR_SIDECAR_UNKNOWN_KEY.format(key="mena", file=path))
    assert error.column == "mena" and error.source == str(path)


@pytest.mark.parametrize("key", ["input_size", "mean", "output"])
def test_missing_key(tmp_path, key):
    data = dict(VALID)
    del data[key]
    path = write(tmp_path, data)
    expect_error(path, sc.ERROR_SIDECAR_MISSING_KEY.format(key=key, file=path))


@pytest.mark.parametrize("key, value, expected", [
    ("classes", "cat", "a non-empty list of class names (strings) or null"),
    ("classes", [], "a non-empty list of class names (strings) or null"),
    ("classes", ["cat", 3], "a non-empty list of class names (strings) or null"),
    ("input_size", [32], "a list of two positive integers [height, width]"),
    ("input_size", [32, 0], "a list of two positive integers [height, width]"),
    ("input_size", [32.0, 32], "a list of two positive integers [height, width]"),
    ("center_crop", 0, "a number in (0, 1] (fraction of width and height kept; 1.0 = no crop)"),
    ("center_crop", 1.5, "a number in (0, 1] (fraction of width and height kept; 1.0 = no crop)"),
    ("center_crop", True, "a number in (0, 1] (fraction of width and height kept; 1.0 = no crop)"),
    ("channel_order", "rgb", "\"RGB\" or \"BGR\""),
    ("mean", [0.5, 0.5], "a list of three numbers"),
    ("mean", "0.5", "a list of three numbers"),
    ("std", [0.5, 0.0, 0.5], "a list of three positive numbers"),
    ("output", "softmax", "\"probabilities\" or \"logits\""),
])
def test_wrong_type(tmp_path, key, value, expected):
    path = write(tmp_path, {**VALID, key: value})
    error = expect_error(path, sc.ERROR_SIDECAR_TYPE.format(key=key, file=path, expected=expected,
                                                            found=sc._type_name(value)))
    assert error.column == key


def test_wrong_scale(tmp_path):
    data = {**VALID, "scale": -1}
    del data["std"]
    path = write(tmp_path, data)
    expect_error(path, sc.ERROR_SIDECAR_TYPE.format(key="scale", file=path, expected="a positive number",
                                                    found=sc._type_name(-1)))


def test_std_or_scale(tmp_path):
    path = write(tmp_path, {**VALID, "scale": 0.1})
    expect_error(path, sc.ERROR_SIDECAR_STD_OR_SCALE.format(file=path, found="both"))
    data = dict(VALID)
    del data["std"]
    path = write(tmp_path, data, "neither.json")
    expect_error(path, sc.ERROR_SIDECAR_STD_OR_SCALE.format(file=path, found="neither"))


def test_duplicate_class(tmp_path):
    path = write(tmp_path, {**VALID, "classes": ["cat", "dog", "cat"]})
    expect_error(path, sc.ERROR_SIDECAR_DUPLICATE_CLASS.format(file=path, name="cat"))


def test_dataclass_validates_too():
    with pytest.raises(ModelError):
        Preprocessing(input_size=(2, 2), mean=(0, 0, 0), output="logits")  # neither std nor scale


# --- precedence ---------------------------------------------------------------------------------------

def test_precedence(tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(b"\x08\x08")
    explicit = write(tmp_path, {**VALID, "classes": ["explicit", "x"]}, "explicit.json")
    beside_generic = write(tmp_path, {**VALID, "classes": ["generic", "x"]}, "model.json")
    # --preprocess wins over everything
    p, source = resolve_preprocessing(preprocess_file=explicit, model_path=model, arch="cifar_resnet20")
    assert p.classes == ("explicit", "x") and source == f"--preprocess {explicit.resolve()}"
    # then model.json beside the model wins over --arch
    p, source = resolve_preprocessing(preprocess_file=None, model_path=model, arch="cifar_resnet20")
    assert p.classes == ("generic", "x") and source == f"sidecar {beside_generic.resolve()}"
    # <stem>.json is preferred to model.json
    stem = write(tmp_path, {**VALID, "classes": ["stem", "x"]}, "net.json")
    p, source = resolve_preprocessing(preprocess_file=None, model_path=model, arch=None)
    assert p.classes == ("stem", "x") and source == f"sidecar {stem.resolve()}"
    # the arch default last
    other = tmp_path / "sub"
    other.mkdir()
    lonely = other / "w.th"
    lonely.write_bytes(b"\x80")
    p, source = resolve_preprocessing(preprocess_file=None, model_path=lonely, arch="cifar_resnet20")
    assert p.classes == CIFAR10_CLASSES and p.input_size == (32, 32) and source == "--arch cifar_resnet20 default"
    with pytest.raises(ModelError) as info:
        resolve_preprocessing(preprocess_file=None, model_path=lonely, arch=None)
    assert str(info.value) == inf.ERROR_NO_PREPROCESSING.format(model=lonely, stem="w")


# --- preprocessing known answers ----------------------------------------------------------------------

def rgb(values):
    return np.asarray(values, dtype=np.uint8)


def test_std_normalisation_known_answer():
    image = rgb([[[0, 255, 51], [255, 0, 102]], [[0, 0, 0], [255, 255, 255]]])
    p = Preprocessing(input_size=(2, 2), mean=(0.5, 0.5, 0.2), std=(0.5, 0.5, 0.2), output="logits")
    out = preprocess_image(image, p)
    assert out.dtype == np.float32 and out.shape == (3, 2, 2)
    np.testing.assert_allclose(out[0], [[-1, 1], [-1, 1]], atol=1e-6)
    np.testing.assert_allclose(out[1], [[1, -1], [-1, 1]], atol=1e-6)
    np.testing.assert_allclose(out[2], [[0, 1], [-1, 4]], atol=1e-6)  # (51/255 - .2)/.2 = 0, (102/255-.2)/.2 = 1


def test_scale_normalisation_and_bgr():
    image = np.zeros((1, 1, 3), dtype=np.uint8)
    image[0, 0] = (30, 20, 10)
    p = Preprocessing(input_size=(1, 1), mean=(10, 20, 30), scale=0.5, output="probabilities")
    np.testing.assert_allclose(preprocess_image(image, p)[:, 0, 0], [10, 0, -10])
    # BGR: channels are reversed first, mean is in the model's (BGR) order
    p_bgr = Preprocessing(input_size=(1, 1), mean=(1, 2, 3), scale=0.5, output="probabilities",
                          channel_order="BGR")
    np.testing.assert_allclose(preprocess_image(image, p_bgr)[:, 0, 0], [4.5, 9, 13.5])  # (10-1, 20-2, 30-3)/2


def test_center_crop_keeps_middle():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    p = Preprocessing(input_size=(2, 2), mean=(0, 0, 0), scale=1.0, output="logits", center_crop=0.5)
    out = preprocess_image(image, p)
    np.testing.assert_array_equal(out, image[1:3, 1:3].transpose(2, 0, 1).astype(np.float32))
    # odd sizes: half of 5 rounds up to 3, centred exactly
    odd = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)
    p3 = Preprocessing(input_size=(3, 3), mean=(0, 0, 0), scale=1.0, output="logits", center_crop=0.5)
    np.testing.assert_array_equal(preprocess_image(odd, p3), odd[1:4, 1:4].transpose(2, 0, 1).astype(np.float32))


def test_resize_matches_pil_bilinear():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(13, 9, 3), dtype=np.uint8)
    p = Preprocessing(input_size=(4, 6), mean=(0, 0, 0), scale=1.0, output="logits")
    expected = np.asarray(Image.fromarray(image).resize((6, 4), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(preprocess_image(image, p), expected.transpose(2, 0, 1).astype(np.float32))
    constant = np.full((7, 5, 3), 200, dtype=np.uint8)
    assert np.all(preprocess_image(constant, p) == 200)


def test_batch_equals_single():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in ((8, 8), (10, 6), (3, 3))]
    p = Preprocessing(input_size=(4, 4), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), output="logits",
                      center_crop=0.75, channel_order="BGR")
    batch = preprocess_batch(images, p)
    assert batch.shape == (3, 3, 4, 4) and batch.dtype == np.float32
    for i, image in enumerate(images):
        np.testing.assert_array_equal(batch[i], preprocess_image(image, p))
    assert preprocess_batch([], p).shape == (0, 3, 4, 4)


def test_rejects_non_rgb():
    p = Preprocessing(input_size=(2, 2), mean=(0, 0, 0), scale=1.0, output="logits")
    with pytest.raises(ValueError):
        preprocess_image(np.zeros((2, 2), dtype=np.uint8), p)
    with pytest.raises(ValueError):
        preprocess_image(np.zeros((2, 2, 3), dtype=np.float32), p)
