"""Batch item keys: equal parameters (as JSON values) are one item, however written; and
which items run again under each reprocess policy."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.batches import (
    ItemStatus,
    Prior,
    Reprocess,
    as_item,
    canonical_json,
    decide,
    item_key,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=20)
params = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(params)
def test_the_key_does_not_depend_on_key_order_spacing_or_how_a_number_is_written(
    p: dict
) -> None:
    shuffled = dict(reversed(list(p.items())))
    reread = json.loads(json.dumps(p, indent=2, sort_keys=False))
    assert item_key("f", p) == item_key("f", shuffled) == item_key("f", reread)
    as_floats = json.loads(json.dumps(p).replace(": 1,", ": 1.0,"))
    assert item_key("f", as_floats) == item_key("f", p) or as_floats == p


def json_equal(a: object, b: object) -> bool:
    """Equal as JSON values: numbers by value (1 is 1.0), booleans only to booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=500, deadline=None)
@given(params, params)
def test_different_parameters_or_flows_are_different_items(a: dict, b: dict) -> None:
    assert (item_key("f", a) == item_key("f", b)) == json_equal(a, b)
    assert item_key("f", a) != item_key("g", a)


def test_an_integral_float_is_its_integer_and_non_finite_numbers_are_refused() -> None:
    assert item_key("f", {"lr": 1.0, "n": [2.0, 0.5]}) == item_key("f", {"n": [2, 0.5], "lr": 1})
    assert item_key("f", {"lr": 0.1}) != item_key("f", {"lr": 0.10000000000000002})
    with pytest.raises(ValueError, match="finite"):
        item_key("f", {"x": math.inf})


def _prior(batch: str, status: ItemStatus, run: str | None, seq: int = 0) -> Prior:
    return Prior(batch, seq, status, run)


@pytest.mark.parametrize(("last", "none", "failed", "all_"), [
    (ItemStatus.SUCCEEDED, "succeeded", "succeeded", None),
    (ItemStatus.FAILED, "failed", None, None),
    (ItemStatus.CANCELLED, None, None, None),
    (ItemStatus.RUNNING, "running", "running", None),
    (ItemStatus.PENDING, "running", "running", None),
])
def test_the_last_run_of_an_item_decides_per_reprocess_policy(
    last: ItemStatus, none: str | None, failed: str | None, all_: str | None
) -> None:
    priors = [_prior("old", ItemStatus.SUCCEEDED if last is ItemStatus.FAILED else
                     ItemStatus.FAILED, "0001"), _prior("new", last, "0002")]
    for policy, expected in ((Reprocess.NONE, none), (Reprocess.FAILED, failed),
                             (Reprocess.ALL, all_)):
        reason = decide(policy, "this", priors)
        if expected is None:
            assert reason is None, (policy, reason)
        else:
            assert reason is not None and reason.startswith(expected)
            assert "in batch new (run 0002)" in reason


def test_items_never_run_run_and_a_repeat_in_the_same_batch_runs_once() -> None:
    waiting_elsewhere = _prior("other", ItemStatus.WAITING, None)
    skipped_elsewhere = _prior("other", ItemStatus.SKIPPED, None)
    for policy in Reprocess:
        assert decide(policy, "this", []) is None
        assert decide(policy, "this", [waiting_elsewhere, skipped_elsewhere]) is None
        assert decide(policy, "this", [_prior("this", ItemStatus.WAITING, None, seq=7)]) == (
            "same parameters as item 7")
    assert "--reprocess failed" in (decide(Reprocess.NONE, "this", [
        _prior("b", ItemStatus.FAILED, "0001")]) or "")


@settings(max_examples=200, deadline=None)
@given(params)
def test_an_item_made_canonical_once_has_the_same_key_and_json(p: dict) -> None:
    value, blob, key = as_item("f", p)
    assert key == item_key("f", p) == item_key("f", value)
    assert blob == canonical_json(p) and json.loads(blob) == value
