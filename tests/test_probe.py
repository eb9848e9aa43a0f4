"""Tests of the K-fold logistic-regression probe (audit/analysis/probe.py)."""
from __future__ import annotations

import numpy as np
import pytest

from audit.analysis import probe as probe_module
from audit.analysis.label_noise import estimate_label_noise
from audit.analysis.probe import assign_folds, compute_out_of_sample_probabilities, fit_kfold_probe
from audit.errors import InputError


def clusters(n=3000, k=4, d=12, *, seed=0, noise=0.1):
    """Gaussian clusters (a linearly separable truth) with labels flipped symmetrically."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (k, d))
    true = rng.integers(0, k, n)
    x = (centres[true] + rng.normal(0, 1, (n, d))).astype(np.float32) * 10 + 3  # unscaled on purpose
    labels = true.copy()
    flip = rng.random(n) < noise
    labels[flip] = (true[flip] + rng.integers(1, k, int(flip.sum()))) % k
    return x, labels, true


def test_folds_are_stratified_and_seeded():
    labels = np.repeat(np.arange(3), [50, 20, 7])
    fold = assign_folds(labels, n_folds=5, seed=1)
    for c in range(3):
        counts = np.bincount(fold[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(fold, assign_folds(labels, n_folds=5, seed=1))
    assert not np.array_equal(fold, assign_folds(labels, n_folds=5, seed=2))


@pytest.mark.parametrize("method", ["lbfgs", "sgd"])
def test_probabilities_are_out_of_sample_and_useful(method):
    x, labels, true = clusters()
    p = compute_out_of_sample_probabilities(x, labels, n_classes=4, method=method, seed=0, n_epochs=5,
                                            chunk_rows=700)
    assert p.shape == (3000, 4) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p.argmax(axis=1) == true).mean() >= 0.95
    result = estimate_label_noise(labels, p, n_classes=4)
    assert abs(result.noise_rate - (labels != true).mean()) <= 0.03
    # Deterministic for a seed.
    again = compute_out_of_sample_probabilities(x, labels, n_classes=4, method=method, seed=0, n_epochs=5,
                                                chunk_rows=700)
    np.testing.assert_array_equal(p, again)


def test_out_of_sample_differs_from_in_sample_on_flipped_labels():
    # A probe that saw an image's (wrong) label would lean towards it; the cross-fitted one does not.
    x, labels, true = clusters(n=1500, seed=3, noise=0.2)
    probe = fit_kfold_probe(x, labels, n_classes=4, method="lbfgs")
    p = probe.predict_out_of_sample(x)
    wrong = labels != true
    assert (p[wrong].argmax(axis=1) == true[wrong]).mean() >= 0.9


def test_chunk_source_input_and_output_match_in_memory():
    x, labels, _ = clusters(n=1200, seed=4)
    source = lambda: (x[s:s + 100] for s in range(0, 1200, 100))
    probe = fit_kfold_probe(source, labels, n_classes=4, method="sgd", n_epochs=3, seed=5)
    in_memory = fit_kfold_probe(x, labels, n_classes=4, method="sgd", n_epochs=3, seed=5, chunk_rows=100)
    chunks = list(probe.probability_chunks(source)())
    assert all(c.shape == (100, 4) for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), in_memory.predict_out_of_sample(x, chunk_rows=100))


def test_auto_method_switches_on_size():
    x, labels, _ = clusters(n=400, seed=6)
    assert fit_kfold_probe(x, labels, n_classes=4).method == "lbfgs"
    assert fit_kfold_probe(x, labels, n_classes=4, max_lbfgs_rows=100, n_epochs=1).method == "sgd"


def test_binary_and_missing_class():
    x, labels, _ = clusters(n=600, k=2, seed=7)
    p = compute_out_of_sample_probabilities(x, labels, n_classes=3, method="lbfgs")
    assert p.shape == (600, 3)
    assert p[:, 2].max() < 1e-6
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_bad_inputs():
    x, labels, _ = clusters(n=100, seed=8)
    bad = labels.copy()
    bad[3] = 9
    with pytest.raises(InputError) as info:
        fit_kfold_probe(x, bad, n_classes=4)
    assert str(info.value) == probe_module.ERROR_LABELS.format(max_index=3, row=3, value=9)
    nan = x.copy()
    nan[42, 0] = np.nan
    with pytest.raises(InputError) as info:
        fit_kfold_probe(nan, labels, n_classes=4)
    assert str(info.value) == probe_module.ERROR_EMBEDDINGS_NOT_FINITE.format(row=42)
    with pytest.raises(InputError) as info:
        fit_kfold_probe(x[:-1], labels, n_classes=4)
    assert str(info.value) == probe_module.ERROR_EMBEDDINGS_ROWS.format(found=99, expected=100)
    with pytest.raises(InputError) as info:
        fit_kfold_probe(x, labels, n_classes=4, n_folds=1)
    assert str(info.value) == probe_module.ERROR_N_FOLDS.format(value=1)
    with pytest.raises(InputError) as info:
        fit_kfold_probe(x, labels, n_classes=4, method="svm")
    assert str(info.value) == probe_module.ERROR_METHOD.format(value="svm")
    for value in (0, -2, 1.5, True, "2"):
        with pytest.raises(InputError) as info:
            fit_kfold_probe(x, labels, n_classes=4, n_jobs=value)
        assert str(info.value) == probe_module.ERROR_N_JOBS.format(value=value)


def test_sgd_probe_numbers_do_not_depend_on_the_number_of_blas_threads():
    # OpenBLAS rounds a product split between threads differently; the probe's small products run on one
    # thread, so its probabilities are the same bits on a 1-core and a many-core machine.
    from threadpoolctl import threadpool_limits

    from audit.analysis.probe import compute_out_of_sample_probabilities

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 1000, 1500)
    embeddings = (rng.standard_normal((1500, 16)) + labels[:, None] % 7).astype(np.float32)
    results = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            results.append(compute_out_of_sample_probabilities(embeddings, labels, n_classes=1000, method="sgd",
                                                               n_epochs=1))
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("n_folds, n_jobs", [(5, 2), (3, -1), (2, 4)])
def test_sgd_folds_in_worker_processes_give_the_same_weights_bit_for_bit(monkeypatch, n_folds, n_jobs):
    """Each worker replays every fold's shuffles and fits only its own folds: the same weights as fitting
    them one after the other, with chunks that cut the folds' rows unevenly."""
    monkeypatch.setattr(probe_module, "PARALLEL_MIN_WORK", 0)
    calls = []
    parallel = probe_module._fit_sgd_parallel
    monkeypatch.setattr(probe_module, "_fit_sgd_parallel", lambda *a, **k: calls.append(k["jobs"]) or parallel(*a, **k))
    x, labels, _ = clusters(n=1200, k=5, d=8, seed=3)
    options = dict(n_classes=5, n_folds=n_folds, method="sgd", n_epochs=2, chunk_rows=500, seed=7)
    serial = fit_kfold_probe(x, labels, **options)
    spread = fit_kfold_probe(x, labels, n_jobs=n_jobs, **options)
    from joblib import cpu_count

    jobs = min(n_folds, cpu_count() if n_jobs == -1 else n_jobs)
    assert calls == ([jobs] if jobs > 1 else [])
    assert np.array_equal(serial.weights, spread.weights)
    assert np.array_equal(serial.bias, spread.bias)
    assert not np.array_equal(serial.weights[0], serial.weights[1])  # the folds were fitted, each its own way
    monkeypatch.setattr(probe_module, "PARALLEL_MIN_WORK", 10**18)  # below the threshold: here
    calls.clear()
    fit_kfold_probe(x, labels, n_jobs=2, **options)
    assert calls == []
