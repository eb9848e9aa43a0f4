"""Real data: the engine's own inference on the 10,000 CIFAR-10 test JPEGs (skips without ../shared/data)."""
import json

import pandas as pd
import pytest

from tests.helpers import SHARED_DATA, check_folder, run_cli

CIFAR = SHARED_DATA / "cifar10-test-jpeg" / "test"
CHECKPOINT = SHARED_DATA / "resnet-cifar10-akamaster" / "resnet20-12fca82f.th"

pytestmark = pytest.mark.skipif(not (CIFAR.is_dir() and CHECKPOINT.is_file()),
                                reason="../shared/data (CIFAR-10 test JPEGs, ResNet-20) is absent")


def test_resnet20_accuracy_on_cifar_jpegs_and_audit_end_to_end(tmp_path):
    done = run_cli("run", "--data", str(CIFAR), "--model", str(CHECKPOINT), "--arch", "cifar_resnet20", "--out",
                   str(tmp_path / "audit"), "--quiet", "--no-cache", "--n-bootstrap", "200")
    assert done.returncode == 0, done.stderr
    code, output = check_folder(tmp_path / "audit")
    assert code == 0, output
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert audit["dataset"]["n_images"] == 10000 and audit["errors"] == []
    images = pd.read_parquet(tmp_path / "audit" / "images.parquet")
    accuracy = (images["label"] == images["prediction"]).mean()
    # Measured for this checkpoint on these JPEGs by the data folder's README: 81.03 %.
    assert abs(accuracy - 0.8103) <= 0.003
    assert audit["analyses"]["class_distribution"]["imbalance_ratio"] == 1.0
