"""The limits every message is held to before it is decoded (protocol/untrusted.py)."""

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.binding import BindError, BindPlan
from protocol.errors import TooLarge
from protocol.messages import TaskDispatch, trigger_decoder
from protocol.untrusted import Malformed, decode, json_depth_over

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:', max_size=6),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=4), children, max_size=3),
    max_leaves=20,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(value=json_values, limit=st.integers(min_value=0, max_value=6))
def test_the_depth_check_agrees_with_the_real_depth_of_any_json(value: Any, limit: int) -> None:
    assert json_depth_over(json.dumps(value).encode(), limit) == (depth(value) > limit)


ADVERSARIAL = {  # strings that never close, escaped quotes, lone backslashes: 1 MB each
    "escaped-quotes": b"[" * 65 + b'"' + b'\\"' * 500_000,
    "quotes": b"[" * 65 + b'"' * 1_000_000,
    "lone-backslash": b"[" * 65 + b'"' + b'\\"' * 500_000 + b"\\",
    "brackets-in-strings": b"[" * 65 + b'"[[[[",' * 150_000,
}


@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_the_depth_check_is_linear_on_hostile_bytes(case: str) -> None:
    # quadratic before: 64 KB of escaped quotes took 12 s, 1 MB would take most of an hour
    assert json_depth_over(ADVERSARIAL[case]) is True


def test_decode_turns_every_failure_into_one_error_with_a_reason() -> None:
    cases = {
        b'{"params": ' + b"[" * 100 + b"]" * 100 + b"}": "levels deep",
        b'{"params": ': "not valid JSON",
        b'{"params": 5}': "Expected `object`",
        b'{"idempotency_key": ""}': "idempotency_key",
    }
    for data, reason in cases.items():
        with pytest.raises(Malformed, match=reason):
            decode(trigger_decoder, data, "trigger")
    with pytest.raises(TooLarge):
        decode(trigger_decoder, b"{}" + b" " * 100, "trigger", max_bytes=10)
    assert decode(trigger_decoder, b'{"params": {"a": [[1]]}}', "trigger").params == {"a": [[1]]}
    assert msgspec.json.decode(b"[[1]]") == [[1]]


def _consumes(clean: Any) -> Any:
    return clean


def test_an_upstream_output_is_read_with_the_limits_and_a_bad_one_fails_the_binding() -> None:
    plan = BindPlan.of(_consumes)

    def dispatch(raw: bytes) -> TaskDispatch:
        return TaskDispatch(run_id="r", flow="f", version="v", task="t", function="m:f",
                            attempt=1, inputs={"clean": msgspec.Raw(raw)})

    assert plan.bind(dispatch(b'{"rows": [1, 2]}'), None) == {"clean": {"rows": [1, 2]}}  # type: ignore[arg-type]
    with pytest.raises(BindError, match=r"upstream output 'clean'.*levels deep"):
        plan.bind(dispatch(b"[" * 100 + b"]" * 100), None)  # type: ignore[arg-type]
