"""The random review sample of an audit and the verified label-error rate it gives (issue 13 item 2).

``review DIR --sample N`` draws a stratified random sample of the audit's images (strata: flagged / not
flagged by the model-label disagreement screen, crossed with the groups of the attributes a policy names in
``[label_noise] attributes``), stores it in the audit folder and writes a CSV for reviewers. The app's Label
quality page shows the same queue. ``review DIR --status`` turns the decisions in ``reviews.sqlite`` on the
sampled images into a stratified estimate of the data set's label-error rate
(:mod:`audit.analysis.stratified`).

Storage: ``review_sample.parquet`` *inside the audit's current generation*
(``DIR/.generations/<run_id>/``, see :mod:`audit.folder`), with the generation's run id in its Parquet
metadata like every other table there, written atomically (temporary file + rename) under the folder lock.
A sample belongs to one run: re-running the audit starts a new generation without it. Decisions stay in
``reviews.sqlite``, and because each image's place in the random order depends only on the seed and its id,
the same seed draws the same images again where the strata are unchanged.

Nested: the k-th draw comes from stratum ``allocation_sequence(...)[k]`` and takes that stratum's next
image in random order, so the sample of size n is the first n draws of the sample of any larger size.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audit.analysis.stratified import (CONFIDENCE, GUESS_FLAGGED, GUESS_NOT_FLAGGED, METHOD, MIN_PER_STRATUM,
                                       allocation_sequence, domain_counts, estimate_stratified_rate,
                                       reviews_needed)
from audit.display import sort_groups
from audit.errors import InputError
from audit.folder import (PARQUET_RUN_ID_KEY, current_generation, folder_lock, load_audit_json, load_images)
from audit.reviews import CONFLICT, list_decisions, resolve_decisions, with_review_keys

SAMPLE_FILE = "review_sample.parquet"
SAMPLE_METADATA_KEY = b"imagefair.review_sample"
SAMPLE_COLUMNS = ("id", "stratum", "draw")
CSV_COLUMNS = ("id", "path", "label", "suggested_label", "stratum")
FLAGGED = "flagged"
NOT_FLAGGED = "not_flagged"
#: The one stratum of an audit without a disagreement screen (no model or predictions).
ALL = "all"

ERROR_SAMPLE_SIZE = "--sample must be a whole number of at least 1; got {value}"
ERROR_SEED_CHANGED = ("{path} already holds a review sample drawn with seed {stored}; give --seed {stored} (or leave "
                      "--seed out) to extend it: another seed would draw a different sample. Re-running the audit "
                      "starts a new sample")
ERROR_STRATA_CHANGED = ("{path} already holds a review sample stratified by {stored}; this request stratifies by "
                        "{requested} (from the policy's [label_noise] attributes). Use the same policy to extend it")
ERROR_UNKNOWN_ATTRIBUTE = ("[label_noise] attributes names {attribute!r}, which is not a column of this audit's "
                           "images; the audit's group attributes are: {known}")
NOTE_WHOLE_DATA_SET = "asked for {requested} images, but the audit has {n_images}: the sample is the whole data set"
NOTE_KEPT_LARGER = ("the folder already holds a sample of {stored}; it is kept (a sample never shrinks) and the CSV "
                    "lists its first {requested} draws")
NOTE_EXTENDED = "extended the stored sample of {stored} to {size} (the first {stored} draws are unchanged)"
NOTE_NEW = "drew a new sample of {size} (seed {seed})"
MESSAGE_NO_SAMPLE = ("no review sample yet, so no verified label-error rate: draw one with `python -m audit review "
                     "{path} --sample 100 --out sample.csv`, review it (in the app's Label quality page or in the "
                     "CSV), then `python -m audit review {path} --import sample.csv --reviewer NAME`")
MESSAGE_NO_REVIEWS = ("the random sample ({size} images) has no review yet, so no verified label-error rate: review it "
                      "in the app's Label quality page (random queue), or fill in the CSV "
                      "(`python -m audit review {path} --sample {size} --out sample.csv`) and import it with "
                      "`python -m audit review {path} --import FILE.csv --reviewer NAME`")
MESSAGE_MISSING_STRATA = ("no reviewed image yet in stratum {strata}: review the sample in its order (the CSV and the "
                          "app's random queue list it round robin over the strata) before the rate can be estimated")


# --------------------------------------------------------------------------------------------- design

def _priority(ids: pd.Series, seed: int) -> np.ndarray:
    """Each image's place in the random order: the first 8 bytes of sha256(seed NUL id), as uint64.

    Depends only on the seed and the id, so it is the same in every run of the audit and on every machine."""
    prefix = f"{int(seed)}\0".encode("utf-8")
    return np.fromiter((int.from_bytes(hashlib.sha256(prefix + i.encode("utf-8")).digest()[:8], "big")
                        for i in ids.astype(str)), dtype=np.uint64, count=len(ids))


def compute_strata(images: pd.DataFrame, attributes=()) -> pd.Series:
    """Stratum name of every image: ``flagged`` / ``not_flagged`` (``is_label_issue``; ``all`` without a
    screen), crossed with ``attr=value`` of each attribute (``<missing>`` for no value), joined by ``" & "``."""
    if "is_label_issue" in images.columns:
        strata = np.where(images["is_label_issue"].fillna(False).astype(bool), FLAGGED, NOT_FLAGGED).astype(object)
    else:
        strata = np.full(len(images), ALL, dtype=object)
    names = pd.Series(strata, index=images.index)
    for attribute in attributes:
        if attribute not in images.columns:
            known = ", ".join(c for c in images.columns if c not in ("id", "path", "label")) or "none"
            raise InputError(ERROR_UNKNOWN_ATTRIBUTE.format(attribute=attribute, known=known))
        values = images[attribute].astype(object).where(images[attribute].notna(), "<missing>").astype(str)
        names = names + f" & {attribute}=" + values
    return names


def _guess(stratum: str) -> float:
    return GUESS_FLAGGED if stratum.split(" & ")[0] == FLAGGED else GUESS_NOT_FLAGGED


def _policy_attributes(attributes) -> tuple[str, ...]:
    """Single attributes named by the policy (an intersection ``a & b`` names both)."""
    out: list[str] = []
    for item in attributes or ():
        for part in str(item).split("&"):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return tuple(out)


@dataclass(frozen=True)
class ReviewSample:
    """A drawn sample: ``frame`` (``id, stratum, draw``; draw = 1-based order) and how it was drawn."""

    frame: pd.DataFrame
    seed: int
    attributes: tuple
    strata: dict  # stratum -> number of images in the audit
    run_id: str | None = None

    @property
    def size(self) -> int:
        return int(len(self.frame))

    def metadata(self) -> dict:
        return {"seed": self.seed, "attributes": list(self.attributes), "strata": self.strata,
                "min_per_stratum": MIN_PER_STRATUM,
                "guesses": {name: _guess(name) for name in self.strata}}


def draw_review_sample(images: pd.DataFrame, n: int, *, seed: int = 0, attributes=()) -> ReviewSample:
    """The first ``n`` draws of the stratified random sample (pure; see the module docstring).

    Parameters
    ----------
    images : DataFrame
        ``images.parquet`` (``id``; ``is_label_issue`` when the audit has a screen; the attributes).
    n : int
        Sample size, capped at the number of images.
    seed : int
    attributes : sequence of str
        Attributes whose groups subdivide the strata.
    """
    attributes = _policy_attributes(attributes)
    strata = compute_strata(images, attributes)
    names = sorted(strata.unique(), key=lambda s: (s.split(" & ")[0] != FLAGGED, s))
    ids = images["id"].astype(str)
    order = pd.DataFrame({"id": ids.to_numpy(), "stratum": strata.to_numpy(), "priority": _priority(ids, seed)})
    order = order.sort_values(["stratum", "priority", "id"], kind="mergesort")
    queues = {name: block["id"].tolist() for name, block in order.groupby("stratum", sort=False)}
    population = np.array([len(queues[name]) for name in names], dtype=np.int64)
    sequence = allocation_sequence(population, [_guess(name) for name in names], n)
    taken = np.zeros(len(names), dtype=np.int64)
    rows = []
    for draw, index in enumerate(sequence, start=1):
        name = names[index]
        rows.append((queues[name][taken[index]], name, draw))
        taken[index] += 1
    frame = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS)).astype({"id": str, "stratum": str, "draw": np.int64})
    return ReviewSample(frame=frame, seed=int(seed), attributes=attributes,
                        strata={name: int(size) for name, size in zip(names, population)})


# --------------------------------------------------------------------------------------------- storage

def _sample_dir(folder: Path) -> Path:
    return current_generation(folder) or folder


def load_review_sample(folder: str | os.PathLike) -> ReviewSample | None:
    """The sample stored for the audit's current run, or None (no sample, or one of an earlier run)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    path = _sample_dir(folder) / SAMPLE_FILE
    if not path.is_file():
        return None
    audit = load_audit_json(folder, validate=False)
    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    run_id = (metadata.get(PARQUET_RUN_ID_KEY) or b"").decode("ascii", "replace") or None
    if run_id != audit.get("run_id"):
        return None
    info = json.loads((metadata.get(SAMPLE_METADATA_KEY) or b"{}").decode("utf-8"))
    frame = table.to_pandas().astype({"id": str, "stratum": str})
    return ReviewSample(frame=frame[list(SAMPLE_COLUMNS)].sort_values("draw").reset_index(drop=True),
                        seed=int(info.get("seed", 0)), attributes=tuple(info.get("attributes", ())),
                        strata={str(k): int(v) for k, v in (info.get("strata") or {}).items()}, run_id=run_id)


def _save(folder: Path, sample: ReviewSample, run_id: str | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from audit.io.atomic import atomic_path

    table = pa.Table.from_pandas(sample.frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    if run_id:
        metadata[PARQUET_RUN_ID_KEY] = run_id.encode("ascii")
    metadata[SAMPLE_METADATA_KEY] = json.dumps(sample.metadata()).encode("utf-8")
    with atomic_path(_sample_dir(folder) / SAMPLE_FILE) as temporary:
        pq.write_table(table.replace_schema_metadata(metadata), temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())


@dataclass(frozen=True)
class SampleRequest:
    """What ``review --sample`` did: the stored sample, the rows for the CSV, and notes for the user."""

    sample: ReviewSample
    csv: pd.DataFrame
    notes: tuple


def request_review_sample(folder: str | os.PathLike, n: int, *, seed: int | None = None,
                          attributes=()) -> SampleRequest:
    """Draw (or extend) the folder's review sample to ``n`` images, store it, and return the CSV rows.

    A request larger than the data set gives the whole data set (said in ``notes``); a smaller one than the
    stored sample keeps the stored sample and returns its first ``n`` draws; a larger one extends it.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(ERROR_SAMPLE_SIZE.format(value=n))
    folder = Path(folder)
    audit = load_audit_json(folder)
    images = load_images(folder)
    attributes = _policy_attributes(attributes)
    notes = []
    with folder_lock(folder):
        stored = load_review_sample(folder)
        if stored is not None:
            if seed is not None and int(seed) != stored.seed:
                raise InputError(ERROR_SEED_CHANGED.format(path=folder, stored=stored.seed))
            if attributes and tuple(attributes) != tuple(stored.attributes):
                raise InputError(ERROR_STRATA_CHANGED.format(path=folder,
                                                             stored=", ".join(stored.attributes) or "the screen only",
                                                             requested=", ".join(attributes)))
            seed, attributes = stored.seed, tuple(stored.attributes)
        seed = 0 if seed is None else int(seed)
        if n > len(images):
            notes.append(NOTE_WHOLE_DATA_SET.format(requested=n, n_images=len(images)))
        if stored is not None and stored.size >= min(n, len(images)):
            sample = stored
            if stored.size > n:
                notes.append(NOTE_KEPT_LARGER.format(stored=stored.size, requested=n))
            rows = stored.frame.head(n)
        else:
            sample = draw_review_sample(images, n, seed=seed, attributes=attributes)
            if stored is not None:
                if not sample.frame["id"].head(stored.size).equals(stored.frame["id"]):  # cannot happen in one run
                    raise InputError(ERROR_STRATA_CHANGED.format(path=folder, stored="another design",
                                                                 requested="this one"))
                notes.append(NOTE_EXTENDED.format(stored=stored.size, size=sample.size))
            else:
                notes.append(NOTE_NEW.format(size=sample.size, seed=seed))
            _save(folder, sample, audit.get("run_id"))
            rows = sample.frame
    return SampleRequest(sample=sample, csv=sample_csv(images, rows), notes=tuple(notes))


def sample_csv(images: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """CSV rows for reviewers: ``id, path, label, suggested_label, stratum`` in draw order."""
    columns = [c for c in ("id", "path", "label", "suggested_label") if c in images.columns]
    info = images[columns].astype({"id": str}).drop_duplicates("id")
    merged = rows[["id", "stratum", "draw"]].merge(info, on="id", how="left").sort_values("draw")
    for column in ("path", "suggested_label"):
        if column not in merged.columns:
            merged[column] = ""
    merged["path"] = merged["path"].astype(object).where(merged["path"].notna(), "")
    return merged[list(CSV_COLUMNS)].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- status

def _rate_dict(rate, *, sample_size: int, confirmed: int) -> dict:
    return {"estimate": rate.estimate if rate else None, "ci_low": rate.ci_low if rate else None,
            "ci_high": rate.ci_high if rate else None, "confidence": CONFIDENCE, "sample_size": int(sample_size),
            "reviewed": int(rate.reviewed) if rate else 0, "confirmed_errors": int(confirmed), "method": METHOD}


def compute_review_status(images: pd.DataFrame, decisions: pd.DataFrame, sample: ReviewSample | None, *,
                          classes=None, group_attributes=(), folder_label: str = "DIR") -> dict:
    """The verified label-error rate of ``images`` from the decisions on the random sample.

    Parameters
    ----------
    images : DataFrame
        ``images.parquet``.
    decisions : DataFrame
        Current decisions (:func:`audit.reviews.list_decisions`).
    sample : ReviewSample or None
    classes : sequence of str, optional
        Class order for ``by_class``.
    group_attributes : sequence of str
        Attributes for ``by_group``.

    Returns
    -------
    dict
        ``label_error_rate`` (contract keys), ``by_group``, ``by_class``, and: ``message`` (what to do next,
        empty when there is an estimate), ``strata`` (per stratum: images, sampled, reviewed, errors),
        ``sample_unsure`` / ``sample_conflicts`` (sampled images whose decision is unsure or in conflict;
        left out of the estimate), ``confirmed_errors_outside_sample``, ``confirmed_error_rate_lower_bound``
        (all confirmed errors / images: the rate is at least this), ``reviews_to_halve_interval``, ``seed``; :func:`load_review_status` adds ``run_id`` and
        ``label_disagreement_rate`` (the screen's figure, for display beside the verified one).

    Notes
    -----
    A sampled image counts when its reviewers agree on ``label_wrong`` (an error) or ``label_correct``; the
    rate is estimated per stratum among those and weighted by stratum size. Unsure and conflicting
    decisions are left out (treated like unreviewed images of their stratum). Reviews of images outside
    the sample (e.g. the top suspects) are confirmed errors, a lower bound, but never enter the estimate:
    they were not chosen at random.
    """
    keyed = with_review_keys(images)
    keys = keyed[["id", "content_hash"]].astype(str)
    resolved = resolve_decisions(decisions).astype({"id": str, "content_hash": str}) if len(decisions) else \
        pd.DataFrame(columns=["id", "content_hash", "decision", "new_label"])
    current = keys.merge(resolved[["id", "content_hash", "decision"]], on=["id", "content_hash"], how="inner")
    decision_of = dict(zip(current["id"], current["decision"]))
    confirmed_all = int((current["decision"] == "label_wrong").sum())
    n_images = int(len(images))
    out = {"label_error_rate": _rate_dict(None, sample_size=0, confirmed=confirmed_all), "by_group": [],
           "by_class": [], "message": "", "strata": [], "seed": None, "n_images": n_images,
           "sample_unsure": 0, "sample_conflicts": 0, "confirmed_errors_outside_sample": confirmed_all,
           "confirmed_error_rate_lower_bound": confirmed_all / n_images if n_images else None,
           "reviews_to_halve_interval": None}
    if sample is None or sample.size == 0:
        out["message"] = MESSAGE_NO_SAMPLE.format(path=folder_label)
        return out
    strata_now = compute_strata(images, sample.attributes)
    names = list(sample.strata)
    for name in strata_now.unique():
        if name not in names:
            names.append(name)
    index_of = {name: h for h, name in enumerate(names)}
    population = np.array([int((strata_now == name).sum()) for name in names], dtype=np.int64)
    frame = sample.frame.copy()
    frame["decision"] = frame["id"].map(decision_of)
    definite = frame[frame["decision"].isin(["label_wrong", "label_correct"])].copy()
    definite["h"] = definite["stratum"].map(index_of).astype(np.int64)
    definite["error"] = definite["decision"] == "label_wrong"
    reviewed = np.bincount(definite["h"], minlength=len(names))
    errors = np.bincount(definite.loc[definite["error"], "h"], minlength=len(names))
    in_sample_errors = int(definite["error"].sum())
    out["seed"] = sample.seed
    out["sample_unsure"] = int((frame["decision"] == "unsure").sum())
    out["sample_conflicts"] = int((frame["decision"] == CONFLICT).sum())
    out["confirmed_errors_outside_sample"] = confirmed_all - in_sample_errors
    sampled = frame["stratum"].map(index_of).value_counts()
    out["strata"] = [{"stratum": name, "n_images": int(population[h]), "sample_size": int(sampled.get(h, 0)),
                      "reviewed": int(reviewed[h]), "confirmed_errors": int(errors[h])} for h, name in enumerate(names)]
    rate = estimate_stratified_rate(errors, reviewed, population, known_errors=confirmed_all)
    out["label_error_rate"] = _rate_dict(rate, sample_size=sample.size, confirmed=confirmed_all)
    if len(definite) == 0:
        out["message"] = MESSAGE_NO_REVIEWS.format(path=folder_label, size=sample.size)
        return out
    if rate.estimate is None:
        out["message"] = MESSAGE_MISSING_STRATA.format(strata=", ".join(names[h] for h in rate.strata_without_reviews))
        return out
    out["reviews_to_halve_interval"] = reviews_needed(rate.estimate, rate.ci_low, rate.ci_high, rate.reviewed)
    # domains: post-strata (stratum x domain) with known sizes; see domain_counts
    by_id = images.assign(_id=images["id"].astype(str)).set_index("_id")
    stratum_h = strata_now.map(index_of).to_numpy()

    def domain(mask_images: np.ndarray, mask_reviewed: np.ndarray) -> dict:
        cell_population = np.bincount(stratum_h[mask_images], minlength=len(names))
        x, n, N = domain_counts(definite["h"].to_numpy(), mask_reviewed, definite["error"].to_numpy(),
                                cell_population)
        live = N > 0
        if (live & (n == 0)).any() and n.sum() > 0:
            # a cell without reviews: estimate the cells' sizes from the sample (Hajek domain estimator)
            stratum_reviewed = np.maximum(reviewed, 1)
            N = np.where(live, population * n / stratum_reviewed, 0.0)
        result = estimate_stratified_rate(x, n, N)
        return {"estimate": result.estimate, "ci_low": result.ci_low, "ci_high": result.ci_high,
                "reviewed": int(n.sum())}

    reviewed_ids = definite["id"].to_numpy()
    for attribute in group_attributes:
        if attribute not in images.columns:
            continue
        values = images[attribute].astype(object).where(images[attribute].notna(), "<missing>").astype(str)
        reviewed_values = values.set_axis(images["id"].astype(str)).reindex(reviewed_ids).to_numpy()
        for value in sort_groups(values.unique()):  # natural order: 0-2, 3-9, 10-19 (not text order)
            out["by_group"].append({"attribute": attribute, "group": value,
                                    **domain((values == value).to_numpy(), reviewed_values == value)})
    labels = images["label"].astype(str)
    reviewed_labels = by_id["label"].astype(str).reindex(reviewed_ids).to_numpy()
    order = [str(c) for c in classes] if classes else sorted(labels.unique())
    for name in order:
        if (labels == name).any():
            out["by_class"].append({"class": name, **domain((labels == name).to_numpy(), reviewed_labels == name)})
    return out


def load_review_status(folder: str | os.PathLike, *, group_attributes=None) -> dict:
    """:func:`compute_review_status` of the audit folder (its images, decisions and stored sample)."""
    folder = Path(folder)
    audit = load_audit_json(folder)
    images = load_images(folder)
    decisions = list_decisions(folder)
    sample = load_review_sample(folder)
    if group_attributes is None:
        group_attributes = list((audit.get("dataset") or {}).get("group_attributes") or [])
        for attribute in sample.attributes if sample else ():
            if attribute not in group_attributes:
                group_attributes.append(attribute)
    status = compute_review_status(images, decisions, sample, classes=audit.get("classes"),
                                   group_attributes=group_attributes, folder_label=str(folder))
    status["run_id"] = audit.get("run_id")
    # the screening figure, for side-by-side display (None without a disagreement screen)
    section = (audit.get("analyses") or {}).get("label_noise") or {}
    status["label_disagreement_rate"] = section.get("label_disagreement_rate")
    return status
