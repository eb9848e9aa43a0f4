"""Near-duplicate search: multi-index hashing equals brute force; embedding neighbours; components."""
from __future__ import annotations

import builtins
from itertools import combinations

import numpy as np
import pytest

from audit.analysis.near_duplicates import (ERROR_EMBEDDINGS_SHAPE, ERROR_HASHES_NOT_1D, ERROR_K,
                                            ERROR_N_QUERIES,
                                            count_bucket_comparisons,
                                            ERROR_MAX_DISTANCE, ERROR_THRESHOLD, connected_components,
                                            find_embedding_neighbours, find_near_duplicate_pairs, popcount)


def random_hashes(rng, n):
    return rng.integers(0, 2 ** 63, size=n, dtype=np.int64).astype(np.uint64) ^ (
        rng.integers(0, 2, size=n).astype(np.uint64) << np.uint64(63))


def flip_bits(rng, value, k):
    bits = rng.choice(64, size=k, replace=False)
    mask = np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64))
    return np.uint64(value) ^ mask


def brute_force(hashes, max_distance):
    found = []
    for i, j in combinations(range(len(hashes)), 2):
        d = bin(int(hashes[i]) ^ int(hashes[j])).count("1")
        if d <= max_distance:
            found.append((i, j, d))
    return found


def planted(rng, n_base=150, copies=3):
    """Random hashes plus copies at 0..12 flipped bits, and a clump sharing the low 40 bits (big buckets)."""
    base = random_hashes(rng, n_base)
    values = list(base)
    for value in base[:40]:
        for _ in range(copies):
            values.append(flip_bits(rng, value, int(rng.integers(0, 13))))
    clump = (random_hashes(rng, 30) & ~np.uint64((1 << 40) - 1)) | np.uint64(12345)
    values.extend(clump)
    values = np.array(values, dtype=np.uint64)
    return values[rng.permutation(values.size)]


@pytest.mark.parametrize("max_distance", [0, 1, 3, 6, 10, 16, 24])
def test_finds_exactly_the_brute_force_pairs(max_distance):
    hashes = planted(np.random.default_rng(max_distance))
    result = find_near_duplicate_pairs(hashes, max_distance=max_distance)
    assert list(zip(result.i.tolist(), result.j.tolist(), result.distance.tolist())) == \
        brute_force(hashes, max_distance)


def test_pairs_are_sorted_unique_and_ordered():
    hashes = planted(np.random.default_rng(7))
    result = find_near_duplicate_pairs(hashes, max_distance=8)
    assert len(result) > 0
    assert (result.i < result.j).all()
    keys = result.i * len(hashes) + result.j
    assert (np.diff(keys) > 0).all()
    assert result.n_candidates >= len(result)


def test_identical_hashes_all_pair_up():
    hashes = np.array([5, 5, 5, 9], dtype=np.uint64)
    result = find_near_duplicate_pairs(hashes, max_distance=0)
    assert list(zip(result.i.tolist(), result.j.tolist())) == [(0, 1), (0, 2), (1, 2)]
    assert result.distance.tolist() == [0, 0, 0]


def test_empty_and_single_inputs():
    for n in (0, 1):
        result = find_near_duplicate_pairs(np.zeros(n, dtype=np.uint64), max_distance=4)
        assert len(result) == 0


def test_accepts_signed_storage_of_the_same_bits():
    hashes = np.array([2 ** 64 - 1, 2 ** 64 - 2], dtype=np.uint64)
    result = find_near_duplicate_pairs(hashes.view(np.int64), max_distance=1)
    assert result.distance.tolist() == [1]


def test_validation_messages():
    with pytest.raises(ValueError) as error:
        find_near_duplicate_pairs(np.zeros((2, 2), dtype=np.uint64), max_distance=1)
    assert str(error.value) == ERROR_HASHES_NOT_1D.format(shape=(2, 2))
    for bad in (-1, 64, 2.0, True):
        with pytest.raises(ValueError) as error:
            find_near_duplicate_pairs(np.zeros(3, dtype=np.uint64), max_distance=bad)
        assert str(error.value) == ERROR_MAX_DISTANCE.format(value=bad)


def test_popcount():
    values = np.array([0, 1, 2 ** 64 - 1, 0b1011], dtype=np.uint64)
    assert popcount(values).tolist() == [0, 1, 64, 3]


def clustered_embeddings(rng):
    centres = rng.normal(size=(20, 16))
    points = np.repeat(centres, 5, axis=0) + rng.normal(scale=0.3, size=(100, 16))
    near_copy = points[3] + rng.normal(scale=0.001, size=16)
    far = rng.normal(size=16) * 5 + 40  # far from every cluster direction
    return np.vstack([points, near_copy, far])


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_embedding_neighbours_find_the_planted_copy(backend, monkeypatch):
    if backend == "sklearn":
        real_import = builtins.__import__

        def no_faiss(name, *args, **kwargs):
            if name == "faiss":
                raise ImportError("no faiss")
            return real_import(name, *args, **kwargs)
        monkeypatch.setattr(builtins, "__import__", no_faiss)
    else:
        pytest.importorskip("faiss")
    embeddings = clustered_embeddings(np.random.default_rng(0))
    result = find_embedding_neighbours(embeddings, k=5, threshold=0.999, chunk_size=17)
    assert list(zip(result.i.tolist(), result.j.tolist())) == [(3, 100)]
    assert result.similarity[0] > 0.999
    assert result.mean_distance.shape == (102,)
    assert (result.mean_distance >= -1e-6).all()


def test_embedding_backends_agree():
    pytest.importorskip("faiss")
    embeddings = clustered_embeddings(np.random.default_rng(1))
    with_faiss = find_embedding_neighbours(embeddings, k=4, threshold=0.9)
    from sklearn.neighbors import NearestNeighbors
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    distance, index = NearestNeighbors(n_neighbors=5, metric="cosine").fit(unit).kneighbors(unit)
    expected = distance[:, 1:].mean(axis=1)
    np.testing.assert_allclose(with_faiss.mean_distance, expected, atol=1e-4)


def test_embedding_validation_messages():
    with pytest.raises(ValueError) as error:
        find_embedding_neighbours(np.zeros(5), k=2, threshold=0.9)
    assert str(error.value) == ERROR_EMBEDDINGS_SHAPE.format(shape=(5,))
    bad = np.ones((3, 2))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError) as error:
        find_embedding_neighbours(bad, k=2, threshold=0.9)
    assert str(error.value) == ERROR_EMBEDDINGS_SHAPE.format(shape=(3, 2))
    with pytest.raises(ValueError) as error:
        find_embedding_neighbours(np.ones((3, 2)), k=0, threshold=0.9)
    assert str(error.value) == ERROR_K.format(value=0)
    with pytest.raises(ValueError) as error:
        find_embedding_neighbours(np.ones((3, 2)), k=1, threshold=1.5)
    assert str(error.value) == ERROR_THRESHOLD.format(value=1.5)


def test_single_embedding_has_no_neighbours():
    result = find_embedding_neighbours(np.ones((1, 4)), k=3, threshold=0.5)
    assert len(result.i) == 0 and result.mean_distance.tolist() == [0.0]


def test_connected_components_numbered_by_smallest_member():
    labels = connected_components(8, np.array([5, 1, 2, 6]), np.array([6, 2, 3, 7]))
    assert labels.tolist() == [-1, 0, 0, 0, -1, 1, 1, 1]
    assert connected_components(3, np.array([], dtype=int), np.array([], dtype=int)).tolist() == [-1, -1, -1]


@pytest.mark.parametrize("plan, max_distance", [((3, 1), 5), ((4, 1), 7), ((6, 2), 16), ((2, 3), 7), ((1, 2), 2)])
def test_masked_band_plans_find_the_brute_force_pairs(plan, max_distance, monkeypatch):
    # Large data sets use fewer, longer bands searched within a small radius; force those plans here.
    import audit.analysis.near_duplicates as module

    n_bands, radius = plan
    assert n_bands * (radius + 1) > max_distance  # the pigeonhole condition the planner relies on
    monkeypatch.setattr(module, "_plan", lambda n, r, share=1.0: plan)
    hashes = planted(np.random.default_rng(max_distance), n_base=80, copies=2)
    result = find_near_duplicate_pairs(hashes, max_distance=max_distance)
    assert list(zip(result.i.tolist(), result.j.tolist(), result.distance.tolist())) == \
        brute_force(hashes, max_distance)
    assert count_bucket_comparisons(hashes, max_distance=max_distance) == result.n_candidates


@pytest.mark.parametrize("n, max_distance", [(10, 0), (500, 8), (10**6, 5), (10**6, 16)])
def test_plan_satisfies_the_pigeonhole_condition(n, max_distance):
    from audit.analysis.near_duplicates import _plan

    n_bands, radius = _plan(n, max_distance)
    assert n_bands * (radius + 1) > max_distance
    assert radius < 64 // n_bands


def test_count_bucket_comparisons_matches_the_search():
    hashes = planted(np.random.default_rng(11))
    for max_distance in (2, 9):
        assert count_bucket_comparisons(hashes, max_distance=max_distance) == \
            find_near_duplicate_pairs(hashes, max_distance=max_distance).n_candidates


def test_expected_bucket_comparisons_matches_uniform_hashes():
    from audit.analysis.near_duplicates import count_bucket_comparisons, expected_bucket_comparisons

    rng = np.random.default_rng(12)
    hashes = rng.integers(0, 2 ** 63, size=200_000, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    hashes |= rng.integers(0, 2, size=hashes.size).astype(np.uint64)
    for radius in (3, 6, 10):
        expected = expected_bucket_comparisons(hashes.size, max_distance=radius)
        exact = count_bucket_comparisons(hashes, max_distance=radius)
        assert 0.8 * expected <= exact <= 1.25 * expected, radius
    # Clustered hashes (many near copies) cost more than the uniform expectation, never less by much.
    clustered = np.repeat(hashes[:1000], 200)
    assert count_bucket_comparisons(clustered, max_distance=6) > expected_bucket_comparisons(clustered.size,
                                                                                            max_distance=6)


@pytest.mark.parametrize("plan, max_distance", [(None, 0), (None, 4), (None, 12), ((3, 1), 5), ((6, 2), 16),
                                                ((1, 2), 2)])
def test_query_search_finds_the_brute_force_pairs_involving_a_query(plan, max_distance, monkeypatch):
    # n_queries: only pairs with a member among the first n_queries hashes, every one of them, each once.
    import audit.analysis.near_duplicates as module

    if plan is not None:
        monkeypatch.setattr(module, "_plan", lambda n, r, share=1.0: plan)
    hashes = planted(np.random.default_rng(20 + max_distance), n_base=80, copies=2)
    for n_queries in (0, 1, 70, hashes.size):
        result = find_near_duplicate_pairs(hashes, max_distance=max_distance, n_queries=n_queries)
        expected = [(i, j, d) for i, j, d in brute_force(hashes, max_distance) if i < n_queries]
        assert list(zip(result.i.tolist(), result.j.tolist(), result.distance.tolist())) == expected
        assert count_bucket_comparisons(hashes, max_distance=max_distance, n_queries=n_queries) == \
            result.n_candidates
    with pytest.raises(ValueError) as error:
        find_near_duplicate_pairs(hashes, max_distance=3, n_queries=hashes.size + 1)
    assert str(error.value) == ERROR_N_QUERIES.format(n=hashes.size, value=hashes.size + 1)


@pytest.mark.parametrize("max_distance", [0, 3, 8, 20])
def test_direct_search_finds_the_same_pairs_as_the_bucket_search(max_distance, monkeypatch):
    from audit.analysis import near_duplicates as module
    from audit.analysis.near_duplicates import (all_pairs_comparisons, direct_search_is_cheaper,
                                                find_near_duplicate_pairs_directly)

    monkeypatch.setattr(module, "_BLOCK_QUERIES", 16)  # several blocks, some overlapping the query rows
    monkeypatch.setattr(module, "_BLOCK_HASHES", 40)
    hashes = planted(np.random.default_rng(21), n_base=90, copies=2)
    for n_queries in (None, 0, 1, 70, hashes.size):
        expected = find_near_duplicate_pairs(hashes, max_distance=max_distance, n_queries=n_queries)
        direct = find_near_duplicate_pairs_directly(hashes, max_distance=max_distance, n_queries=n_queries)
        assert (direct.i.tolist(), direct.j.tolist(), direct.distance.tolist()) == \
            (expected.i.tolist(), expected.j.tolist(), expected.distance.tolist())
        assert direct.n_candidates == all_pairs_comparisons(hashes.size, n_queries)
    # a few hundred hashes: comparing every pair is the cheaper search
    assert direct_search_is_cheaper(hashes, max_distance=max_distance)


def test_direct_search_of_empty_and_single_inputs():
    from audit.analysis.near_duplicates import find_near_duplicate_pairs_directly

    for hashes in (np.zeros(0, dtype=np.uint64), np.ones(1, dtype=np.uint64)):
        assert len(find_near_duplicate_pairs_directly(hashes, max_distance=5)) == 0


def test_unique_sorted_matches_numpy_unique():
    from audit.analysis.near_duplicates import unique_sorted

    values = np.random.default_rng(3).integers(0, 50, 500)
    expected, first = np.unique(values, return_index=True)
    assert unique_sorted(values).tolist() == expected.tolist()
    got, got_first = unique_sorted(values, return_index=True)
    assert got.tolist() == expected.tolist() and got_first.tolist() == first.tolist()
    assert unique_sorted(np.zeros(0, dtype=np.int64)).size == 0


def mutual_cluster(rng, size, n_random=200):
    """``size`` hashes within 2 bits of one base (mutual distance <= 4) among ``n_random`` random hashes."""
    base = random_hashes(rng, 1)[0]
    cluster = [flip_bits(rng, base, int(rng.integers(0, 3))) for _ in range(size)]
    values = np.concatenate([np.array(cluster, dtype=np.uint64), random_hashes(rng, n_random)])
    return values[rng.permutation(values.size)]


def components_of(n, pairs):
    return connected_components(n, np.asarray([p[0] for p in pairs], dtype=np.int64),
                                np.asarray([p[1] for p in pairs], dtype=np.int64))


@pytest.mark.parametrize("search", ["buckets", "direct"])
def test_crowded_cluster_is_bounded_and_stays_one_set(search, monkeypatch):
    from audit.analysis import near_duplicates

    monkeypatch.setattr(near_duplicates, "MAX_LINKS_PER_HASH", 8)
    rng = np.random.default_rng(5)
    hashes = mutual_cluster(rng, 300)
    truth = brute_force(hashes, 6)
    find = find_near_duplicate_pairs if search == "buckets" else near_duplicates.find_near_duplicate_pairs_directly
    found = find(hashes, max_distance=6)
    # at most 8 links per hash instead of all 300 * 299 / 2 pairs of the cluster, and counted
    assert len(found) <= 8 * hashes.size < len(truth)
    assert found.n_bounded >= len(truth) - len(found)
    if search == "direct":  # every pair within the radius is either kept or counted
        assert found.n_bounded == len(truth) - len(found)
    # each hash keeps its links to the 8 nearest positions after it
    kept = {}
    for i, j in zip(found.i.tolist(), found.j.tolist()):
        kept.setdefault(i, []).append(j)
    for i, js in kept.items():
        assert js == sorted(j for a, j, _ in truth if a == i)[:8]
    assert set(zip(found.i.tolist(), found.j.tolist())) <= {(i, j) for i, j, _ in truth}
    # the duplicate sets (connected components) are those of all pairs
    np.testing.assert_array_equal(components_of(hashes.size, list(zip(found.i, found.j))),
                                  components_of(hashes.size, truth))


def test_uncrowded_data_is_not_bounded():
    rng = np.random.default_rng(7)
    hashes = planted(rng)
    for found in (find_near_duplicate_pairs(hashes, max_distance=10),
                  __import__("audit.analysis.near_duplicates", fromlist=["x"]).find_near_duplicate_pairs_directly(
                      hashes, max_distance=10)):
        assert found.n_bounded == 0
        assert list(zip(found.i.tolist(), found.j.tolist(), found.distance.tolist())) == brute_force(hashes, 10)


def test_approximate_embedding_search_above_the_exact_budget(monkeypatch):
    from audit.analysis import near_duplicates

    rng = np.random.default_rng(8)
    embeddings = rng.normal(size=(2000, 16)).astype(np.float32)
    embeddings[1500] = embeddings[7] + 1e-4  # a planted copy
    exact = find_embedding_neighbours(embeddings, k=5, threshold=0.999)
    assert exact.exact
    monkeypatch.setattr(near_duplicates, "EMBEDDING_EXACT_MAX_PAIRS", 2000 * 2000 - 1)
    approximate = find_embedding_neighbours(embeddings, k=5, threshold=0.999)
    again = find_embedding_neighbours(embeddings, k=5, threshold=0.999)
    assert not approximate.exact
    assert (7, 1500) in set(zip(approximate.i.tolist(), approximate.j.tolist()))
    # the approximate mean distance is never below the exact one (it is over k found neighbours, not the k
    # nearest) and close to it
    assert np.all(approximate.mean_distance >= exact.mean_distance - 1e-6)
    assert np.mean(np.isclose(approximate.mean_distance, exact.mean_distance, atol=1e-6)) > 0.95
    # built on one thread: the same result every time
    np.testing.assert_array_equal(approximate.mean_distance, again.mean_distance)
