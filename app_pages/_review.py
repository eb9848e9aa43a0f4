"""The verified label-error rate and the random review queue (issue 13 item 2), shared by Overview and Label
quality. Numbers come from :mod:`audit.review_sample` (the same function as ``review --status``); nothing is
computed here."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _state
from audit.escaping import streamlit_markdown_code

QUEUE_SUSPECTS = "Ranked suspects"
QUEUE_RANDOM = "Random sample (verified rate)"
DEFAULT_SAMPLE_SIZE = 100


def sample_of(audit):
    """The review sample stored for the audit's run (None when there is none)."""
    from audit.review_sample import load_review_sample

    return load_review_sample(audit.folder)


def verified_status(audit) -> dict:
    """``review --status`` of the audit, with decisions read fresh from ``reviews.sqlite``."""
    from audit.review_sample import compute_review_status

    decisions, _ = _state.review_state(audit)
    attributes = list((audit.audit.get("dataset") or {}).get("group_attributes") or [])
    sample = sample_of(audit)
    for attribute in sample.attributes if sample else ():
        if attribute not in attributes:
            attributes.append(attribute)
    return compute_review_status(audit.images, decisions, sample, classes=audit.classes,
                                 group_attributes=attributes, folder_label=str(audit.folder))


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def show_verified(audit, container=None, *, detail: bool = False) -> dict:
    """The verified label-error rate (estimate, interval, counts); with ``detail`` also what halves it and the
    strata. Returns the status."""
    target = container or st
    status = verified_status(audit)
    rate = status["label_error_rate"]
    left, right = target.columns(2)
    left.metric("Verified label-error rate", _percent(rate["estimate"]),
                help="Estimated from people's decisions on a stratified random sample of the images (`review "
                     "--sample`, or the random queue on the Label quality page), weighted by stratum size. Unlike "
                     "the disagreement rate, it does not count the model's own mistakes.")
    right.metric("Confirmed label errors", f"{rate['confirmed_errors']:,}",
                 help="Images whose reviewers agree the label is wrong, in the random sample or not. The rate is at "
                      "least this count / images; only the random sample enters the estimate.")
    if rate["estimate"] is not None:
        target.caption(f"{100 * rate['confidence']:.0f} % interval {_percent(rate['ci_low'])} - {_percent(rate['ci_high'])} "
                       f"from {rate['reviewed']} reviewed images of a random sample of {rate['sample_size']} "
                       f"({status['n_images']:,} images); {rate['confirmed_errors']} confirmed "
                       f"error{'' if rate['confirmed_errors'] == 1 else 's'}, "
                       f"{status['confirmed_errors_outside_sample']} of them outside the sample (lower bound "
                       f"{_percent(status['confirmed_error_rate_lower_bound'])}).")
        if detail and status.get("reviews_to_halve_interval"):
            target.caption(f"About {status['reviews_to_halve_interval']:,} more reviews of the random queue (in its "
                           f"order) would halve the interval.")
    else:
        # the message is shared with `review --status` (lower-case start, commands in backticks): a sentence
        # here, with the commands as code rather than literal backticks
        message = str(status["message"])
        target.caption(streamlit_markdown_code(message[:1].upper() + message[1:]))
    if detail and status.get("strata"):
        target.dataframe(pd.DataFrame(status["strata"]), hide_index=True, width="stretch", key="verified_strata")
    return status


def random_queue(audit, images: pd.DataFrame) -> pd.DataFrame | None:
    """``images`` rows of the stored random sample in draw order (with ``stratum``), or None without one."""
    sample = sample_of(audit)
    if sample is None:
        return None
    rows = sample.frame[["id", "stratum", "draw"]]
    merged = rows.merge(images.assign(id=images["id"].astype(str)), on="id", how="inner")
    return merged.sort_values("draw", kind="stable")


def draw_sample_controls(audit) -> None:
    """Draw (or extend) the stored random sample from the app (the same as ``review --sample N``)."""
    from audit.errors import InputError
    from audit.review_sample import request_review_sample

    sample = sample_of(audit)
    columns = st.columns([1, 1, 2])
    size = columns[0].number_input("Sample size", min_value=1, max_value=max(1, len(audit.images)),
                                   value=min(len(audit.images), max(DEFAULT_SAMPLE_SIZE, sample.size if sample else 0)),
                                   step=50, key="review_sample_size")
    label = "Extend the sample" if sample is not None else "Draw a random sample"
    if columns[1].button(label, key="review_sample_draw"):
        try:
            request = request_review_sample(audit.folder, int(size))
        except InputError as error:
            st.error(str(error))
        else:
            st.session_state["review_saved"] = "; ".join(request.notes)
            st.rerun()
    if sample is not None:
        columns[2].caption(f"Stored sample: {sample.size} images, seed {sample.seed}; strata "
                           + ", ".join(f"{_state.escape_markdown(k)} ({v:,} images)" for k, v in sample.strata.items())
                           + ". Review it in this order; `python -m audit review DIR --sample N --out FILE.csv` writes "
                             "the same queue for an outside tool.")
