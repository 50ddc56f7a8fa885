"""The small language of ``flowforge experiments --where/--sort``, parsed by hand (never
evaluated): conditions joined by ``and``, and one sort key.

    params.lr<0.01 and metrics.accuracy>=0.9 and status=succeeded
    -accuracy        params.lr        created_at

A field is ``status``, ``params.<key>[.<key>...]``, ``metrics.<name>`` or a bare metric name;
an operator one of ``= == != < <= > >=``; a value a number, ``true``/``false``/``null``, a
quoted string, or a bare word (``status=succeeded``, ``params.model=resnet``).
"""

import math
import re
from dataclasses import dataclass
from typing import Literal

from protocol.errors import BadRequest
from protocol.experiments import MAX_CONDITIONS, MAX_QUERY_CHARS, name_problem
from protocol.states import RunStatus

Kind = Literal["status", "param", "metric", "created_at", "run_id"]
Value = float | int | str | bool | None
OPERATORS = ("<=", ">=", "!=", "==", "=", "<", ">")
_KEY = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"^{_KEY}(?:\.{_KEY})*$")
_CONDITION = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op><=|>=|!=|==|=|<|>)\s*"
    r"""(?P<value>'[^']*'|"[^"]*"|[^\s'"<>=!]+)\s*""")
_AND = re.compile(r"and\b\s*", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_WORDS: dict[str, Value] = {"true": True, "false": False, "null": None}
_STATUSES = {s.value for s in RunStatus}
WHERE_HELP = ("conditions joined by 'and', each FIELD OP VALUE: FIELD is status, params.KEY or "
              "metrics.NAME; OP one of = != < <= > >=; e.g. "
              "\"params.lr<0.01 and metrics.accuracy>=0.9 and status=succeeded\"")


@dataclass(frozen=True, slots=True)
class Field:
    kind: Kind
    key: str = ""
    """The parameter's path (``opt.lr``) or the metric's name; empty for the others."""

    def __str__(self) -> str:
        return {"param": f"params.{self.key}", "metric": f"metrics.{self.key}"}.get(
            self.kind, self.kind)


@dataclass(frozen=True, slots=True)
class Condition:
    field: Field
    op: str
    """One of ``= != < <= > >=`` (``==`` is read as ``=``)."""
    value: Value


@dataclass(frozen=True, slots=True)
class SortKey:
    field: Field
    descending: bool


def parse_field(text: str, where: str) -> Field:
    """``status``, ``created_at``, ``run_id``, ``params.a.b``, ``metrics.val.loss`` or a
    bare metric name."""
    if text in ("status", "created_at", "run_id"):
        return Field(text)  # type: ignore[arg-type]  # the literal is one of them
    head, _, rest = text.partition(".")
    if head == "params":
        if not rest or not _PATH.match(rest):
            raise BadRequest(f"{where}: {text!r} names no parameter: params.KEY (letters, "
                             "digits and '_'; dots for nested keys)")
        return Field("param", rest)
    name = rest if head == "metrics" else text
    problem = name_problem(name)
    if problem is not None:
        raise BadRequest(f"{where}: {text!r} is not a field: status, params.KEY, metrics.NAME "
                         f"or a metric's name ({problem})")
    return Field("metric", name)


def parse_where(text: str | None) -> list[Condition]:
    """The conditions of a ``--where`` expression; BadRequest saying where it went wrong."""
    if text is None or not text.strip():
        return []
    if len(text) > MAX_QUERY_CHARS:
        raise BadRequest(f"--where is over {MAX_QUERY_CHARS} characters")
    conditions: list[Condition] = []
    pos = 0
    while True:
        found = _CONDITION.match(text, pos)
        if found is None:
            raise BadRequest(f"--where {text!r}: expected a condition at "
                             f"{_at(text, pos)}; {WHERE_HELP}")
        conditions.append(_condition(found["field"], found["op"], found["value"]))
        pos = found.end()
        if pos == len(text):
            break
        joined = _AND.match(text, pos)
        if joined is None:
            raise BadRequest(f"--where {text!r}: expected 'and' at {_at(text, pos)}; "
                             "conditions are joined by 'and' (there is no 'or')")
        pos = joined.end()
        if len(conditions) >= MAX_CONDITIONS:
            raise BadRequest(f"--where has more than {MAX_CONDITIONS} conditions")
    return conditions


def _condition(field_text: str, op: str, value_text: str) -> Condition:
    field = parse_field(field_text, "--where")
    value = _value(value_text)
    op = "=" if op == "==" else op
    if field.kind == "status":
        if op not in ("=", "!=") or value not in _STATUSES:
            raise BadRequest(f"--where: status can only be compared with = or != to one of "
                             f"{', '.join(sorted(_STATUSES))} (got {op}{value_text})")
    elif field.kind in ("metric", "created_at") and (
            isinstance(value, bool) or not isinstance(value, int | float)):
        raise BadRequest(f"--where: {field} is a number; {value_text!r} is not")
    elif field.kind == "run_id" and not isinstance(value, str):
        raise BadRequest(f"--where: run_id is compared with a run id, not {value_text!r}")
    return Condition(field, op, value)


def _value(text: str) -> Value:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    if _NUMBER.match(text):
        number = float(text)
        if not math.isfinite(number):
            raise BadRequest(f"--where: {text} is not a finite number")
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else number
    return text


def _at(text: str, pos: int) -> str:
    rest = text[pos:].strip()
    return f"{rest[:30]!r}" if rest else "the end"


def parse_sort(text: str | None) -> SortKey | None:
    """``-accuracy`` (descending), ``params.lr``, ``created_at``...; None for no key."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    descending = text.startswith("-")
    return SortKey(parse_field(text.lstrip("+-"), "--sort"), descending)


def where_text(conditions: list[Condition]) -> str:
    """The expression that parses back into ``conditions``."""
    return " and ".join(f"{c.field}{c.op}{_value_text(c.value)}" for c in conditions)


def _value_text(value: Value) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        return f'"{value}"' if "'" in value else f"'{value}'"
    return repr(value)
