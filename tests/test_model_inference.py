"""Model loading (TorchScript, ONNX, state_dict + arch), pickled-code refusal, prediction, class mapping, cache."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audit.errors import ModelError
from audit.model import inference as inf
from audit.model.architectures import ARCHITECTURES, CIFAR10_CLASSES, get_architecture
from audit.model.cache import (default_cache_dir, inference_cache_key, load_cached, store_cached)
from audit.model.inference import (align_to_dataset, detect_model_kind, iter_predictions, load_class_map,
                                   load_model, softmax)
from audit.model.sidecar import Preprocessing, preprocess_batch

# torch 2.13 deprecates TorchScript; it still loads, and users still have such files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"

SIDE = {"classes": ["a", "b", "c"], "input_size": [2, 2], "center_crop": 1.0, "channel_order": "RGB",
        "mean": [0.0, 0.0, 0.0], "scale": 1.0, "output": "logits"}


class Tiny(nn.Module):
    """Flatten a 3x2x2 input and apply a fixed linear map: logits (n, 3) and the flat input as embeddings."""

    def __init__(self, with_embeddings: bool):
        super().__init__()
        self.linear = nn.Linear(12, 3)
        self.with_embeddings = with_embeddings
        with torch.no_grad():
            self.linear.weight.copy_(torch.arange(36, dtype=torch.float32).reshape(3, 12) / 100)
            self.linear.bias.copy_(torch.tensor([0.5, -0.5, 0.0]))

    def forward(self, x: torch.Tensor):
        flat = torch.flatten(x, 1)
        if self.with_embeddings:
            return self.linear(flat), flat
        return self.linear(flat), None


def tiny_expected(batch: np.ndarray) -> np.ndarray:
    w = np.arange(36, dtype=np.float64).reshape(3, 12) / 100
    logits = batch.reshape(len(batch), -1).astype(np.float64) @ w.T + np.array([0.5, -0.5, 0.0])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def images(n: int, seed: int = 0, size=(2, 2)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=size + (3,), dtype=np.uint8) for _ in range(n)]


# --- TorchScript ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_embeddings", [True, False])
def test_torchscript_model(tmp_path, with_embeddings):
    path = tmp_path / "tiny.bin"  # no telling extension: the kind comes from the content
    torch.jit.save(torch.jit.script(Tiny(with_embeddings)), str(path))
    sidecar = write_json(tmp_path / "side.json", SIDE)
    model = load_model(path, preprocess_file=sidecar)
    assert model.kind == "torchscript" and detect_model_kind(path) == "torchscript"
    assert model.classes == ("a", "b", "c")
    assert model.sha256 == inf.file_sha256(path) and len(model.sha256) == 64
    assert model.preprocessing_source == f"--preprocess {sidecar.resolve()}"
    batch = (np.random.default_rng(1).random((5, 3, 2, 2)) * 3).astype(np.float32)
    probabilities, embeddings = model.predict(batch)
    assert probabilities.dtype == np.float32 and probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities, tiny_expected(batch), rtol=1e-5, atol=1e-6)
    if with_embeddings:
        np.testing.assert_allclose(embeddings, batch.reshape(5, 12))
    else:
        assert embeddings is None
    json.dumps(model.to_dict())


def test_torchscript_nan_output_is_an_error(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny(False)), str(path))
    model = load_model(path, preprocess_file=write_json(tmp_path / "side.json", SIDE))
    batch = np.zeros((3, 3, 2, 2), dtype=np.float32)
    batch[1, 0, 0, 0] = np.nan
    with pytest.raises(ModelError) as info:
        model.predict(batch)
    assert str(info.value) == inf.ERROR_MODEL_OUTPUT_NAN.format(file=path, position=1)


def test_probabilities_output_checked(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny(False)), str(path))
    model = load_model(path, preprocess_file=write_json(tmp_path / "side.json", {**SIDE, "output": "probabilities"}))
    with pytest.raises(ModelError) as info:
        model.predict(np.ones((2, 3, 2, 2), dtype=np.float32))
    assert str(info.value) == inf.ERROR_MODEL_NOT_PROBABILITIES.format(file=path, position=0)


class TinySoftmax(Tiny):
    """Tiny ending in a softmax (probabilities out)."""

    def forward(self, x: torch.Tensor):
        return torch.softmax(self.linear(torch.flatten(x, 1)), dim=1), None


def test_a_logits_sidecar_on_a_softmax_model_is_refused(tmp_path):
    """Issue 11 item 5: a second softmax (0.987 -> 0.726 confidence) is refused, not applied."""
    path = tmp_path / "soft.pt"
    torch.jit.save(torch.jit.script(TinySoftmax(False)), str(path))
    model = load_model(path, preprocess_file=write_json(tmp_path / "side.json", SIDE))
    with pytest.raises(ModelError) as info:
        model.predict(np.ones((4, 3, 2, 2), dtype=np.float32))
    assert str(info.value) == inf.ERROR_MODEL_LOOKS_SOFTMAX.format(file=path, n=4)
    good = load_model(path, preprocess_file=write_json(tmp_path / "side2.json", {**SIDE, "output": "probabilities"}))
    probabilities, _ = good.predict(np.ones((4, 3, 2, 2), dtype=np.float32))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_wrong_class_count_and_batch_shape(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny(False)), str(path))
    model = load_model(path, preprocess_file=write_json(tmp_path / "side.json", {**SIDE, "classes": ["a", "b"]}))
    with pytest.raises(ModelError) as info:
        model.predict(np.zeros((1, 3, 2, 2), dtype=np.float32))
    assert str(info.value) == inf.ERROR_MODEL_N_CLASSES.format(file=path, k=3, n=2, classes="a, b")
    with pytest.raises(ModelError) as info:
        model.predict(np.zeros((1, 3, 4, 4), dtype=np.float32))
    assert str(info.value) == inf.ERROR_MODEL_BATCH.format(h=2, w=2, found=((1, 3, 4, 4), "float32"))


def test_iter_predictions_batches_and_progress(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny(True)), str(path))
    model = load_model(path, preprocess_file=write_json(tmp_path / "side.json", SIDE))
    chunks = [(np.array([10, 11, 12, 13, 14]), images(5, 0)), (np.array([20, 21]), images(2, 1))]
    seen = []
    out = list(iter_predictions(chunks, model, batch_size=2, progress=seen.append))
    assert [list(o[0]) for o in out] == [[10, 11], [12, 13], [14], [20, 21]]
    assert seen == [2, 2, 1, 2]
    all_images = chunks[0][1] + chunks[1][1]
    expected = tiny_expected(preprocess_batch(all_images, model.preprocessing))
    np.testing.assert_allclose(np.concatenate([o[1] for o in out]), expected, rtol=1e-5, atol=1e-6)
    assert np.concatenate([o[2] for o in out]).shape == (7, 12)


# --- ONNX ----------------------------------------------------------------------------------------------
# The `onnx` package is not installed (torch.onnx.export needs it), so a tiny graph is written directly in
# the protobuf wire format: Flatten -> Gemm, outputs logits (n, 3) and the flat input as embeddings.

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def _value_info(name: str, dims) -> bytes:
    shape = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in dims)
    tensor_type = _field(1, 1) + _field(2, shape)  # elem_type FLOAT, shape
    return _field(1, name) + _field(2, _field(1, tensor_type))


def _tensor(name: str, array: np.ndarray) -> bytes:
    dims = b"".join(_field(1, int(d)) for d in array.shape)
    return dims + _field(2, 1) + _field(8, name) + _field(9, array.astype("<f4").tobytes())


def tiny_onnx_bytes(height: int = 2, width: int = 2) -> bytes:
    weight = (np.arange(36, dtype=np.float32).reshape(3, 12) / 100).T.copy()  # (12, 3)
    bias = np.array([0.5, -0.5, 0.0], dtype=np.float32)
    flatten = _field(1, "x") + _field(2, "flat") + _field(4, "Flatten") + _field(5, _field(1, "axis") + _field(3, 1)
                                                                                 + _field(20, 2))
    gemm = _field(1, "flat") + _field(1, "W") + _field(1, "B") + _field(2, "logits") + _field(4, "Gemm")
    graph = (_field(1, flatten) + _field(1, gemm) + _field(2, "tiny") + _field(5, _tensor("W", weight))
             + _field(5, _tensor("B", bias)) + _field(11, _value_info("x", ["N", 3, height, width]))
             + _field(12, _value_info("logits", ["N", 3])) + _field(12, _value_info("flat", ["N", 12])))
    return _field(1, 8) + _field(2, "imagefair-test") + _field(7, graph) + _field(8, _field(1, "") + _field(2, 13))


def test_onnx_model_known_answer(tmp_path):
    path = tmp_path / "tiny.model"
    path.write_bytes(tiny_onnx_bytes())
    write_json(tmp_path / "tiny.json", SIDE)  # <stem>.json beside the model
    model = load_model(path)
    assert model.kind == "onnx" and model.classes == ("a", "b", "c")
    assert model.preprocessing_source == f"sidecar {(tmp_path / 'tiny.json').resolve()}"
    batch = (np.random.default_rng(2).random((4, 3, 2, 2)) * 2).astype(np.float32)
    probabilities, embeddings = model.predict(batch)
    np.testing.assert_allclose(probabilities, tiny_expected(batch), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embeddings, batch.reshape(4, 12))


def test_onnx_input_size_mismatch(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_onnx_bytes())
    sidecar = write_json(tmp_path / "p.json", {**SIDE, "input_size": [4, 4]})
    with pytest.raises(ModelError) as info:
        load_model(path, preprocess_file=sidecar)
    assert str(info.value) == inf.ERROR_MODEL_INPUT_SIZE.format(
        file=path, model_size=(2, 2), source=f"--preprocess {sidecar.resolve()}", size=(4, 4))


def test_broken_onnx(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x08\x3a\x05abc")
    write_json(tmp_path / "model.json", SIDE)
    with pytest.raises(ModelError, match=r"^Cannot load the ONNX model "):
        load_model(path)


def test_sample_model_onnx():
    """The shipped demo model: ONNX, softmax in the graph, no embeddings, female/male."""
    model = load_model(SAMPLE / "model.onnx")
    assert model.kind == "onnx" and model.classes == ("female", "male")
    assert model.preprocessing.output == "probabilities" and model.preprocessing.center_crop == 0.5
    probabilities, embeddings = model.predict(preprocess_batch(images(3, 5, size=(64, 64)), model.preprocessing))
    assert embeddings is None and probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


# --- state_dict + arch ----------------------------------------------------------------------------------

def random_cifar_resnet(arch: str = "cifar_resnet20") -> nn.Module:
    torch.manual_seed(0)
    net = get_architecture(arch).build()
    with torch.no_grad():  # non-trivial BatchNorm statistics so a wrong key mapping would show
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("zip_format", [True, False])
def test_state_dict_round_trip(tmp_path, zip_format):
    net = random_cifar_resnet()
    state = {"module." + k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "weights.th"
    torch.save({"best_prec1": 1.0, "state_dict": state}, path, _use_new_zipfile_serialization=zip_format)
    assert detect_model_kind(path) == "state_dict"
    model = load_model(path, arch="cifar_resnet20")
    assert model.kind == "state_dict" and model.classes == CIFAR10_CLASSES
    assert model.preprocessing_source == "--arch cifar_resnet20 default"
    batch = np.random.default_rng(3).standard_normal((6, 3, 32, 32)).astype(np.float32)
    probabilities, embeddings = model.predict(batch)
    with torch.no_grad():
        logits, features = net.forward_with_embeddings(torch.from_numpy(batch))
    np.testing.assert_allclose(probabilities, torch.softmax(logits, 1).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(embeddings, features.numpy(), rtol=1e-4, atol=1e-5)
    assert embeddings.shape == (6, 64)


def test_plain_state_dict_and_structure():
    net = get_architecture("cifar_resnet20").build()
    n_tensors = sum(1 for k in net.state_dict() if not k.endswith("num_batches_tracked"))
    assert n_tensors == 97  # as in the reference checkpoint's key list
    assert sum(p.numel() for p in net.parameters()) == 269722
    assert set(ARCHITECTURES) == {"cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56"}
    assert len(get_architecture("cifar_resnet56").build().layer2) == 9


def test_state_dict_needs_arch_and_fitting_arch(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(random_cifar_resnet("cifar_resnet32").state_dict(), path)
    write_json(tmp_path / "model.json", {**SIDE, "input_size": [32, 32]})
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert str(info.value) == inf.ERROR_MODEL_NEEDS_ARCH.format(file=path, known=", ".join(sorted(ARCHITECTURES)))
    with pytest.raises(ModelError, match=r"does not fit --arch cifar_resnet20: 72 unexpected key\(s\), e.g. layer1.3"):
        load_model(path, arch="cifar_resnet20")
    with pytest.raises(ModelError) as info:
        load_model(path, arch="resnet9000")
    assert str(info.value).startswith("Unknown architecture 'resnet9000' (--arch).")


class Custom:
    """Any class of the user's: unpickling it would import and run the user's module code."""


class Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bare = tmp_path / "bare.pkl"
    bare.write_bytes(pickle.dumps({"state_dict": Evil(str(marker))}, protocol=2))
    saved = tmp_path / "saved.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Custom()}, saved)
    for path, culprit in ((bare, f"{os.system.__module__}.system"), (saved, f"{__name__}.Custom")):
        assert detect_model_kind(path) == "state_dict"
        with pytest.raises(ModelError) as info:
            load_model(path, arch="cifar_resnet20")
        assert str(info.value) == inf.ERROR_MODEL_PICKLED_CODE.format(file=path, reason=f"it refers to {culprit}")
    assert not marker.exists()


def test_unknown_format_and_missing_file(tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"hello world")
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert str(info.value) == inf.ERROR_MODEL_UNKNOWN_FORMAT.format(file=path)
    with pytest.raises(ModelError) as info:
        load_model(tmp_path / "absent.onnx")
    assert str(info.value) == inf.ERROR_MODEL_NOT_FOUND.format(file=tmp_path / "absent.onnx")


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelError) as info:
        load_model(path, arch="cifar_resnet20")
    assert str(info.value) == inf.ERROR_MODEL_NOT_STATE_DICT.format(file=path, found="list")


def test_softmax_is_stable():
    out = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, 0.0, 0.0]]))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-7)


# --- class mapping --------------------------------------------------------------------------------------

def write_map(tmp_path, text: str) -> Path:
    path = tmp_path / "map.csv"
    path.write_text(text)
    return path


def test_load_class_map(tmp_path):
    assert load_class_map(write_map(tmp_path, "model_class,dataset_class\ncat,animal\n dog , animal\n\n")) == {
        "cat": "animal", "dog": "animal"}
    path = write_map(tmp_path, "from,to\ncat,animal\n")
    with pytest.raises(ModelError) as info:
        load_class_map(path)
    assert str(info.value) == inf.ERROR_CLASS_MAP_HEADER.format(file=path, found="from,to")
    path = write_map(tmp_path, "model_class,dataset_class\ncat,\n")
    with pytest.raises(ModelError) as info:
        load_class_map(path)
    assert str(info.value) == inf.ERROR_CLASS_MAP_EMPTY_VALUE.format(row=0, file=path, column="dataset_class")
    path = write_map(tmp_path, "model_class,dataset_class\ncat,a\ndog,a\ncat,b\n")
    with pytest.raises(ModelError) as info:
        load_class_map(path)
    assert str(info.value) == inf.ERROR_CLASS_MAP_DUPLICATE.format(row=2, file=path, name="cat")
    with pytest.raises(ModelError, match="^Cannot read the class map"):
        load_class_map(tmp_path / "absent.csv")


def test_align_reorders_and_sums():
    p = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], dtype=np.float32)
    out = align_to_dataset(p, model_classes=("a", "b", "c"), dataset_classes=("c", "a", "b"), class_map=None)
    np.testing.assert_allclose(out, p[:, [2, 0, 1]])
    out = align_to_dataset(p, model_classes=("a", "b", "c"), dataset_classes=("x", "y"),
                           class_map={"a": "y", "b": "x", "c": "y"})
    np.testing.assert_allclose(out, [[0.2, 0.8], [0.25, 0.75]], rtol=1e-6)
    assert out.dtype == np.float32


def test_align_errors():
    p = np.full((1, 3), 1 / 3, dtype=np.float32)
    models, data = ("a", "b", "c"), ("a", "b")
    with pytest.raises(ModelError) as info:
        align_to_dataset(p, model_classes=models, dataset_classes=data, class_map=None)
    assert str(info.value) == inf.ERROR_MODEL_CLASS_UNMAPPED.format(name="c", dataset="a, b")
    with pytest.raises(ModelError) as info:
        align_to_dataset(p, model_classes=models, dataset_classes=("a", "b", "c", "d"), class_map=None)
    assert str(info.value) == inf.ERROR_DATASET_CLASS_UNMAPPED.format(name="d", model="a, b, c")
    with pytest.raises(ModelError) as info:
        align_to_dataset(p, model_classes=models, dataset_classes=data, class_map={"a": "a", "b": "b"})
    assert str(info.value) == inf.ERROR_MODEL_CLASS_UNMAPPED.format(name="c", dataset="a, b")
    with pytest.raises(ModelError) as info:
        align_to_dataset(p, model_classes=models, dataset_classes=data,
                         class_map={"a": "a", "b": "b", "c": "b", "z": "a"})
    assert str(info.value) == inf.ERROR_CLASS_MAP_UNKNOWN_MODEL_CLASS.format(name="z", model="a, b, c")
    with pytest.raises(ModelError) as info:
        align_to_dataset(p, model_classes=models, dataset_classes=data, class_map={"a": "a", "b": "b", "c": "q"})
    assert str(info.value) == inf.ERROR_CLASS_MAP_UNKNOWN_DATASET_CLASS.format(model_class="c", name="q",
                                                                               dataset="a, b")
    with pytest.raises(ModelError) as info:
        align_to_dataset(p, model_classes=("a", "b"), dataset_classes=data, class_map=None)
    assert str(info.value) == inf.ERROR_ALIGN_N_CLASSES.format(k=3, n=2, classes="a, b")
    with pytest.raises(ModelError) as info:
        align_to_dataset(p, model_classes=None, dataset_classes=data, class_map=None)
    assert str(info.value) == inf.ERROR_NO_MODEL_CLASSES


def test_load_model_reads_class_map(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny(False)), str(path))
    write_json(tmp_path / "model.json", SIDE)
    model = load_model(path, class_map_file=write_map(tmp_path, "model_class,dataset_class\na,x\nb,x\nc,y\n"))
    assert model.class_map == {"a": "x", "b": "x", "c": "y"}


# --- cache ----------------------------------------------------------------------------------------------

def test_cache_key():
    pre = Preprocessing(input_size=(2, 2), mean=(0, 0, 0), scale=1.0, output="logits").to_dict()
    key = inference_cache_key(content_hashes=["aa", "bb"], model_sha256="m", preprocessing=pre)
    assert len(key) == 64 and key == inference_cache_key(content_hashes=["aa", "bb"], model_sha256="m",
                                                         preprocessing=dict(pre))
    assert key != inference_cache_key(content_hashes=["bb", "aa"], model_sha256="m", preprocessing=pre)
    assert key != inference_cache_key(content_hashes=["aa", "bb"], model_sha256="n", preprocessing=pre)
    assert key != inference_cache_key(content_hashes=["aa", "bb"], model_sha256="m",
                                      preprocessing={**pre, "center_crop": 0.5})


def test_cache_hit_miss_corrupt(tmp_path):
    probabilities = np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32)
    embeddings = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert load_cached(tmp_path, "k1") is None
    store_cached(tmp_path, "k1", probabilities, embeddings)
    got_p, got_e = load_cached(tmp_path, "k1")
    np.testing.assert_array_equal(got_p, probabilities)
    np.testing.assert_array_equal(got_e, embeddings)
    assert load_cached(tmp_path, "k1", n_rows=3) is None
    store_cached(tmp_path, "k2", probabilities, None)
    got_p, got_e = load_cached(tmp_path, "k2", n_rows=2)
    assert got_e is None
    assert not list(tmp_path.rglob("*.tmp"))
    # corrupt and truncated files are misses, not crashes
    files = sorted((tmp_path / "inference").glob("k1.*"))
    (tmp_path / "inference" / "k1.probabilities.npy").write_bytes(b"garbage")
    assert load_cached(tmp_path, "k1") is None
    data = (tmp_path / "inference" / "k2.probabilities.npy").read_bytes()
    (tmp_path / "inference" / "k2.probabilities.npy").write_bytes(data[:-3])
    assert load_cached(tmp_path, "k2") is None
    assert len(files) == 2


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGEFAIR_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("IMAGEFAIR_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "imagefair"


@pytest.mark.skipif(not (SAMPLE / "manifest.csv").is_file(), reason="sample_data not built")
def test_sample_demo_accuracy_matches_readme():
    """sample_data/README.md reports 79.4 % overall, 67.1 % Black, 86.7 % White for the demo model."""
    import pandas as pd
    from PIL import Image

    manifest = pd.read_csv(SAMPLE / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest.columns) == ["path", "label", "age", "race", "service_test"]
    assert len(manifest) == 540 and set(manifest["label"]) == {"female", "male"}
    assert "more than 70" in set(manifest["age"]) and "0-2" in set(manifest["age"])
    pictures = []
    for name in manifest["path"]:
        with Image.open(SAMPLE / name) as image:
            assert image.size == (128, 128)
            pictures.append(np.asarray(image.convert("RGB")))
    model = load_model(SAMPLE / "model.onnx")
    assert model.sha256 == "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734"
    out = list(iter_predictions([(np.arange(len(pictures)), pictures)], model, batch_size=256))
    predicted = np.array(model.classes)[np.concatenate([o[1] for o in out]).argmax(axis=1)]
    correct = predicted == manifest["label"].to_numpy()
    assert abs(correct.mean() - 429 / 540) < 0.01
    assert abs(correct[manifest["race"].to_numpy() == "Black"].mean() - 0.6707) < 0.03
    assert abs(correct[manifest["race"].to_numpy() == "White"].mean() - 0.8667) < 0.03
