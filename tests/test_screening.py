"""Issue 13, item 3: which probabilities rank label suspects (model, probe on embeddings, their mean).

Known ground truth: labels flipped at random; a model that memorised the flipped labels (as a model trained
on the audited data does) is confident in exactly the wrong labels, while a probe on informative embeddings,
fitted out of sample, is not."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from audit.analysis import screening
from audit.analysis.label_noise import estimate_label_noise
from audit.analysis.probe import compute_out_of_sample_probabilities
from audit.analysis.screening import (ERROR_NEEDS_EMBEDDINGS, ERROR_SOURCE, REASON_AUTO_COMBINED,
                                      REASON_AUTO_NO_EMBEDDINGS, REASON_PROBE_FAILED, REASON_REQUESTED,
                                      choose_screening_probabilities, combine_probabilities)
from audit.errors import InputError
from audit.findings import FINDING_AUDITED_MODEL_ERROR, disagreement_sentence
from audit.pipeline import steps as registry

K = 3


def _world(n=1200, seed=0, flip_rate=0.1, memorised=0.8):
    """Embeddings that separate the true classes, labels flipped at ``flip_rate``, and a model that gives
    0.9 to the *given* label on ``memorised`` of the flipped images (and is right elsewhere)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, n)
    centres = rng.normal(0, 3, (K, 8))
    embeddings = (centres[true] + rng.normal(0, 1, (n, 8))).astype(np.float32)
    flipped = rng.random(n) < flip_rate
    labels = true.copy()
    labels[flipped] = (true[flipped] + rng.integers(1, K, flipped.sum())) % K
    believed = np.where(flipped & (rng.random(n) < memorised), labels, true)
    model = np.full((n, K), 0.05, dtype=np.float32)
    model[np.arange(n), believed] = 0.9
    return labels, flipped, model, embeddings


def _noisy_world(n=1500, seed=9, flip_rate=0.1, model_error=0.2):
    """A model that never saw the images and errs on ``model_error`` of them (a random wrong class, confidence
    0.5-0.95); embeddings that separate the true classes; labels flipped at ``flip_rate``."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, n)
    centres = rng.normal(0, 3, (K, 8))
    embeddings = (centres[true] + rng.normal(0, 1.5, (n, 8))).astype(np.float32)
    flipped = rng.random(n) < flip_rate
    labels = true.copy()
    labels[flipped] = (true[flipped] + rng.integers(1, K, flipped.sum())) % K
    wrong = rng.random(n) < model_error
    predicted = np.where(wrong, (true + rng.integers(1, K, n)) % K, true)
    confidence = rng.uniform(0.5, 0.95, n)
    model = np.tile(((1 - confidence) / (K - 1))[:, None], (1, K)).astype(np.float32)
    model[np.arange(n), predicted] = confidence
    return labels, flipped, model, embeddings


def test_auto_uses_the_combination_when_there_are_embeddings():
    labels, _, model, embeddings = _noisy_world()
    probe = compute_out_of_sample_probabilities(embeddings, labels, n_classes=K, seed=0, method="lbfgs")
    choice = choose_screening_probabilities(model, labels, probe_probabilities=probe)
    assert (choice.source, choice.requested, choice.reason) == ("combined", "auto", REASON_AUTO_COMBINED)
    np.testing.assert_allclose(choice.probabilities, combine_probabilities(model, probe), atol=1e-7)
    assert set(choice.candidates) == {"model", "probe", "combined"} and set(choice.alternatives) == {"model", "probe"}
    assert choice.to_dict()["used"] == "combined"


def test_auto_without_embeddings_is_the_model():
    labels, _, model, _ = _world()
    choice = choose_screening_probabilities(model, labels)
    assert (choice.source, choice.reason) == ("model", REASON_AUTO_NO_EMBEDDINGS)
    assert choice.probabilities is not None and not choice.alternatives


def test_requested_sources_and_their_messages():
    labels, _, model, embeddings = _noisy_world(n=300)
    probe = compute_out_of_sample_probabilities(embeddings, labels, n_classes=K, seed=0, method="lbfgs")
    for source in ("model", "probe", "combined"):
        choice = choose_screening_probabilities(model, labels, source=source, probe_probabilities=probe)
        assert (choice.source, choice.reason) == (source, REASON_REQUESTED.format(source=source))
    with pytest.raises(InputError) as info:
        choose_screening_probabilities(model, labels, source="probe")
    assert str(info.value) == ERROR_NEEDS_EMBEDDINGS.format(source="probe")
    with pytest.raises(InputError) as info:
        choose_screening_probabilities(model, labels, source="best")
    assert str(info.value) == ERROR_SOURCE.format(value="best")
    failed = choose_screening_probabilities(model, labels, source="combined", probe_error="ValueError: x")
    assert (failed.source, failed.reason) == ("model", REASON_PROBE_FAILED.format(source="combined", error="ValueError: x"))


def test_combined_rows_are_probabilities():
    a = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    b = np.array([[0.5, 0.5], [0.6, 0.4]], dtype=np.float32)
    np.testing.assert_allclose(combine_probabilities(a, b), [[0.7, 0.3], [0.4, 0.6]], atol=1e-7)


def _flags(labels, probabilities):
    return estimate_label_noise(labels, probabilities, n_classes=K).is_label_issue


def test_a_model_that_memorised_the_labels_makes_auto_use_the_probe():
    """The model gives 0.9 to 80 % of the wrong labels (it trained on them): it finds few flips, averaging
    with the probe does not fix that, the probe alone does, and auto sees it."""
    labels, flipped, model, embeddings = _world(n=1500, seed=3)
    probe = compute_out_of_sample_probabilities(embeddings, labels, n_classes=K, seed=0, method="lbfgs")
    choice = choose_screening_probabilities(model, labels, probe_probabilities=probe)
    assert choice.source == "probe" and choice.reason.startswith("auto: the model agrees with the given labels")
    found = {source: int(flipped[_flags(labels, choose_screening_probabilities(
        model, labels, source=source, probe_probabilities=probe).probabilities)].sum())
        for source in ("model", "probe")}
    assert found["model"] <= 0.3 * flipped.sum() and found["probe"] >= 0.8 * flipped.sum()


def test_on_a_noisy_out_of_sample_model_the_combination_flags_far_fewer_model_errors():
    """Known truth: 10 % flipped labels, a model wrong on 20 % of images. The model's flags are mostly its own
    errors; the combination's are mostly flipped labels, and auto uses it."""
    labels, flipped, model, embeddings = _noisy_world()
    probe = compute_out_of_sample_probabilities(embeddings, labels, n_classes=K, seed=0, method="lbfgs")
    auto = choose_screening_probabilities(model, labels, probe_probabilities=probe)
    assert auto.source == "combined"
    model_flags = _flags(labels, model)
    combined_flags = _flags(labels, auto.probabilities)
    precision = {name: flipped[flags].mean() for name, flags in (("model", model_flags), ("combined", combined_flags))}
    recall = {name: flags[flipped].mean() for name, flags in (("model", model_flags), ("combined", combined_flags))}
    assert precision["model"] < 0.5 and precision["combined"] > 0.9
    assert recall["combined"] >= recall["model"] - 0.05


def _context(labels, model, embeddings, source):
    n = len(labels)
    kept = pd.DataFrame({"id": [f"i{i}" for i in range(n)], "label": np.array(["a", "b", "c"])[labels],
                         "site": np.where(np.arange(n) % 2, "x", "y")})
    config = SimpleNamespace(seed=0, confidence_level=0.95, label_noise_source=source,
                             label_score_method="self_confidence", max_intersection_depth=1, min_group_size=30,
                             max_ci_width=0.3, correction="holm", group_by=None, reference_file=None)
    return registry.build_context(kept, classes=("a", "b", "c"), dataset=SimpleNamespace(group_attributes=["site"]),
                                  probabilities=model, embeddings=embeddings, config=config)


@pytest.mark.parametrize("source,used", [("auto", "combined"), ("model", "model"), ("probe", "probe")])
def test_the_step_records_and_says_which_source_it_used(source, used):
    labels, _, model, embeddings = _noisy_world(n=600, seed=5)
    output = registry._label_noise_step(_context(labels, model, embeddings, source))
    section = output.sections["label_noise"]
    assert section["source"] == used and section["source_choice"]["requested"] == source
    assert section["source_description"] == screening.DESCRIPTIONS[used]
    assert set(section["alternatives"]) == {"model", "probe", "combined"} - {used}
    if used != "model":
        audited = float(np.mean(model.argmax(axis=1) != labels))
        assert section["audited_model_error_rate"] == pytest.approx(audited)
        assert disagreement_sentence(section).endswith(FINDING_AUDITED_MODEL_ERROR.format(
            error_rate=f"{100 * audited:.1f} %"))
    table = output.group_rows[0]
    assert {"label_disagreement_rate", "model_error_rate"} == set(table["metric"])


def test_the_step_without_embeddings_uses_the_model():
    labels, _, model, _ = _world(n=300, seed=6)
    section = registry._label_noise_step(_context(labels, model, None, "auto")).sections["label_noise"]
    assert section["source"] == "model" and section["source_choice"]["reason"] == REASON_AUTO_NO_EMBEDDINGS
    assert "alternatives" not in section and "audited_model_error_rate" not in section


def test_combined_probabilities_are_the_same_whatever_the_block_size(monkeypatch):
    from audit.analysis import screening

    rng = np.random.default_rng(3)
    model = rng.dirichlet(np.ones(7), 1001).astype(np.float32)
    probe = rng.dirichlet(np.ones(7), 1001).astype(np.float32)
    whole = (model.astype(np.float64) + probe.astype(np.float64)) / 2.0
    whole = (whole / whole.sum(axis=1, keepdims=True)).astype(np.float32)
    monkeypatch.setattr(screening, "COMBINE_CHUNK_ROWS", 64)
    combined = screening.combine_probabilities(model, probe)
    assert combined.dtype == np.float32 and np.array_equal(combined, whole)
    with pytest.raises(ValueError):
        screening.combine_probabilities(model, probe[:10])
