"""The --where/--sort language of `flowforge experiments`: parsed by hand, never evaluated."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import BadRequest
from protocol.experiment_query import (
    Condition,
    Field,
    SortKey,
    parse_sort,
    parse_where,
    where_text,
)


def test_conditions_joined_by_and_are_read_into_fields_operators_and_values() -> None:
    got = parse_where("params.lr<0.01 and metrics.accuracy>=0.9 AND status=succeeded "
                      "and params.opt.name == 'adam w' and accuracy!=1 and params.tag=\"x\"")
    assert got == [
        Condition(Field("param", "lr"), "<", 0.01),
        Condition(Field("metric", "accuracy"), ">=", 0.9),
        Condition(Field("status"), "=", "succeeded"),
        Condition(Field("param", "opt.name"), "=", "adam w"),
        Condition(Field("metric", "accuracy"), "!=", 1),
        Condition(Field("param", "tag"), "=", "x"),
    ]
    assert parse_where("params.fast=true and params.seed=null") == [
        Condition(Field("param", "fast"), "=", True), Condition(Field("param", "seed"), "=", None)]
    assert parse_where("  ") == [] and parse_where(None) == []


@pytest.mark.parametrize(("text", "said"), [
    ("params.lr<", "expected a condition"),
    ("lr 0.1", "expected a condition"),
    ("params.lr<0.1 or params.lr>1", "expected 'and'"),
    ("params.lr<0.1 and", "expected a condition"),
    ("status>succeeded", "status can only be compared"),
    ("status=exploded", "status can only be compared"),
    ("metrics.accuracy>high", "is a number"),
    ("params.<1", "names no parameter"),
    ("params.a-b<1", "expected"),
    ("metrics.1x>1", "not a field"),
    ("params.x=1e999", "not a finite number"),
    (" and ".join(["params.a=1"] * 17), "more than 16"),
    ("params.a=1; DROP TABLE runs", "expected 'and'"),
])
def test_a_bad_expression_is_a_clear_error(text: str, said: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_where(text)
    assert said in caught.value.message


def test_sort_keys_name_a_metric_a_parameter_or_a_column_and_a_direction() -> None:
    assert parse_sort("-accuracy") == SortKey(Field("metric", "accuracy"), True)
    assert parse_sort("metrics.val.loss") == SortKey(Field("metric", "val.loss"), False)
    assert parse_sort("params.lr") == SortKey(Field("param", "lr"), False)
    assert parse_sort("-created_at") == SortKey(Field("created_at"), True)
    assert parse_sort(None) is None
    with pytest.raises(BadRequest, match="not a field"):
        parse_sort("-bad name")


_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_fields = st.one_of(
    st.builds(Field, st.just("param"), st.lists(_keys, min_size=1, max_size=3).map(".".join)),
    st.builds(Field, st.just("metric"), _keys))
_values = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_characters="'\"", blacklist_categories=("Cs",)),
            max_size=12),
    st.booleans(), st.none())


@st.composite
def _conditions(draw: st.DrawFn) -> Condition:
    field = draw(_fields)
    value = draw(st.one_of(st.integers(-10**6, 10**6),
                           st.floats(allow_nan=False, allow_infinity=False))
                 if field.kind == "metric" else _values)
    return Condition(field, draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="])), value)


@given(st.lists(_conditions(), min_size=1, max_size=6))
def test_any_expression_written_from_conditions_parses_back_into_them(
    conditions: list[Condition]
) -> None:
    assert parse_where(where_text(conditions)) == conditions


@given(st.text(max_size=80))
def test_no_text_makes_the_parser_fail_other_than_with_a_clear_error(text: str) -> None:
    with contextlib.suppress(BadRequest):
        parse_where(text)
