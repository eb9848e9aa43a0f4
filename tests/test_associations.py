import numpy as np
import pandas as pd

from audit.analysis.associations import compute_associations


def test_planted_association_is_found_and_independent_attribute_is_not():
    rng = np.random.default_rng(0)
    n = 2000
    labels = pd.Series(rng.choice(["nurse", "doctor"], size=n))
    # gender depends on the class: 80 % women among nurses, 30 % among doctors
    women = np.where(labels == "nurse", rng.random(n) < 0.8, rng.random(n) < 0.3)
    gender = pd.Series(np.where(women, "woman", "man"))
    device = pd.Series(rng.choice(["phone", "camera"], size=n))
    result = compute_associations(labels, classes=("doctor", "nurse"), groups={"gender": gender, "device": device})
    by_name = {e["attribute"]: e for e in result.attributes}
    assert by_name["gender"]["significant"] and by_name["gender"]["cramers_v"] > 0.4
    assert not by_name["device"]["significant"]
    assert result.attributes[0]["attribute"] == "gender"  # strongest first
    top = by_name["gender"]["cells"][0]
    assert top["significant"]
    over = [c for c in by_name["gender"]["cells"] if c["direction"] == "over"]
    assert {(c["class"], c["group"]) for c in over} == {("nurse", "woman"), ("doctor", "man")}
    assert np.asarray(result.contingency["gender"]["counts"]).sum() == n


def test_false_positive_rate_under_alpha_on_independent_data():
    hits = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        labels = pd.Series(rng.choice(list("abc"), size=300))
        group = pd.Series(rng.choice(list("xyz"), size=300))
        result = compute_associations(labels, classes=("a", "b", "c"), groups={"g": group})
        hits += result.attributes[0]["significant"]
    assert hits / 200 < 0.09
