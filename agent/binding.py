"""Binding a task function's parameters by name: ctx, upstream outputs, run parameters."""

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from flowforge.context import TaskContext
from flowforge.introspect import is_context, signature_of
from protocol.errors import FlowForgeError
from protocol.messages import TaskDispatch
from protocol.untrusted import decode

_CTX, _NAMED, _VAR_KW = 0, 1, 2


class BindError(Exception):
    """A parameter has no value: neither a run parameter, an upstream output nor a default."""


@dataclass(frozen=True, slots=True)
class BindPlan:
    """What each parameter of one function gets; computed once per function."""

    slots: tuple[tuple[str, int, bool], ...]
    """(name, kind, has_default) in signature order."""
    is_async: bool

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> "BindPlan":
        slots = []
        for p in signature_of(fn).parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                slots.append((p.name, _VAR_KW, True))
            elif is_context(p.name, p.annotation):
                slots.append((p.name, _CTX, False))
            else:
                slots.append((p.name, _NAMED, p.default is not p.empty))
        return cls(slots=tuple(slots), is_async=inspect.iscoroutinefunction(fn))

    def bind(self, task: TaskDispatch, ctx: TaskContext) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for name, kind, has_default in self.slots:
            if kind == _CTX:
                kwargs[name] = ctx
            elif kind == _VAR_KW:
                for key, value in task.params.items():
                    kwargs.setdefault(key, value)
            elif name in task.inputs:
                kwargs[name] = _input(name, task.inputs[name])
            elif name in task.params:
                kwargs[name] = task.params[name]
            elif not has_default:
                raise BindError(_missing(name, task.inputs, task.params))
        return kwargs


_any = msgspec.json.Decoder()


def _input(name: str, raw: msgspec.Raw) -> Any:
    """An upstream output, read like every other message part: with the limits first."""
    try:
        return decode(_any, bytes(raw), f"upstream output {name!r}")
    except FlowForgeError as exc:
        raise BindError(exc.message) from None


def _missing(name: str, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    return (
        f"parameter {name!r} has no value: it is not a run parameter "
        f"(got {sorted(params) or 'none'}) nor the output of an upstream task "
        f"(got {sorted(inputs) or 'none'}); pass it with --param {name}=... or give it a default"
    )
