"""Real data: the pretrained CIFAR-10 ResNet-20 checkpoint on the 10,000 CIFAR-10 test JPEGs.

Skipped when ../shared/data is absent. The folder README measured 81.03 % accuracy with independent code,
and ships that model's softmax outputs on the same files (``index.csv`` maps each file to its row).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.model.architectures import CIFAR10_CLASSES
from audit.model.inference import iter_predictions, load_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGES = DATA / "cifar10-test-jpeg"
WEIGHTS = DATA / "resnet-cifar10-akamaster"

pytestmark = pytest.mark.skipif(not (IMAGES / "index.csv").is_file()
                                or not (WEIGHTS / "resnet20-12fca82f.th").is_file(),
                                reason="../shared/data (CIFAR-10 JPEGs, ResNet checkpoints) is absent")


def test_resnet20_on_cifar10_test_jpeg():
    index = pd.read_csv(IMAGES / "index.csv")
    folder_classes = tuple(sorted(p.name for p in (IMAGES / "test").iterdir() if p.is_dir()))
    assert folder_classes == tuple(sorted(CIFAR10_CLASSES))  # ImageFolder classes
    images = []
    for name in index["file"]:
        with Image.open(IMAGES / name) as image:
            images.append(np.asarray(image.convert("RGB")))
    model = load_model(WEIGHTS / "resnet20-12fca82f.th", arch="cifar_resnet20")
    assert model.sha256.startswith("12fca82f")
    chunks = [(np.arange(start, min(start + 2500, len(images))), images[start:start + 2500])
              for start in range(0, len(images), 2500)]
    out = list(iter_predictions(chunks, model, batch_size=500))
    rows = np.concatenate([o[0] for o in out])
    probabilities = np.concatenate([o[1] for o in out])
    embeddings = np.concatenate([o[2] for o in out])
    np.testing.assert_array_equal(rows, np.arange(len(index)))
    assert probabilities.shape == (10000, 10) and embeddings.shape == (10000, 64)
    # Model class order = CIFAR label order; map it to the data set order (sorted folder names).
    labels = index["class"].map({name: i for i, name in enumerate(CIFAR10_CLASSES)}).to_numpy()
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    assert abs(accuracy - 0.8103) <= 0.003, accuracy
    reference = np.load(WEIGHTS / "probs_resnet20-12fca82f_on_cifar10-test-jpeg.npy", allow_pickle=False)
    assert np.abs(probabilities - reference).max() < 1e-4
    assert (probabilities.argmax(axis=1) == reference.argmax(axis=1)).all()
