"""Turning a Python function into a task spec: its import path, parameters, docs and source."""

import inspect
import sys
import typing
from collections.abc import Callable, Collection
from typing import Any

from protocol.dag import MAPPED_NAMES
from protocol.errors import FunctionNotImportable, InvalidOption
from protocol.flows import ParamSpec

_PLAIN_TYPES: dict[Any, str] = {
    int: "int", float: "float", str: "str", bool: "bool",
    list: "list", tuple: "list", dict: "dict",
}

CTX_NAME = "ctx"


def function_ref(flow: str, task: str, fn: Any, resolve: bool = True) -> str:
    """``module:qualname`` of a module-level function, or FunctionNotImportable saying why
    (without ``resolve``, for a decorator: its module does not have it yet)."""
    if not callable(fn):
        raise FunctionNotImportable(flow, task, f"'function' must be a function, got {fn!r}")
    if not (inspect.isfunction(fn) or inspect.iscoroutinefunction(fn)):
        raise FunctionNotImportable(
            flow, task, f"{fn!r} is not a plain Python function; wrap it in a module-level def"
        )
    qualname, module = fn.__qualname__, fn.__module__
    if "<lambda>" in qualname:
        raise FunctionNotImportable(
            flow, task, "a lambda cannot be imported by agents; use a module-level def"
        )
    if "<locals>" in qualname:
        raise FunctionNotImportable(
            flow, task,
            f"{qualname} is defined inside another function; agents import functions by "
            "module path, so define it at module level",
        )
    if module == "__main__":
        raise FunctionNotImportable(
            flow, task,
            f"{qualname} is defined in __main__, which agents cannot import; put the flow in "
            "a module (e.g. myflows.py) and run it with `flowforge dev myflows.py`",
        )
    if not resolve:
        return f"{module}:{qualname}"
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is None or inspect.unwrap(found) is not inspect.unwrap(fn):
        raise FunctionNotImportable(
            flow, task, f"{module}:{qualname} does not resolve to this function by import"
        )
    return f"{module}:{qualname}"


def _type_name(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(annotation) or annotation
    return _PLAIN_TYPES.get(origin)


def signature_of(fn: Callable[..., Any]) -> inspect.Signature:
    """The signature with string annotations resolved where possible."""
    try:
        return inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        return inspect.signature(fn)


def bind_plan(
    flow: str, task: str, fn: Callable[..., Any], task_names: Collection[str],
    mapped: bool = False,
) -> tuple[tuple[ParamSpec, ...], tuple[str, ...], bool]:
    """Split a function's parameters into run params, upstream inputs and ``**kwargs`` (a
    mapped task's ``item`` and ``map_index`` are neither: each instance gets its own)."""
    params: list[ParamSpec] = []
    inputs: list[str] = []
    accepts_all = False
    for p in signature_of(fn).parameters.values():
        if p.kind is p.POSITIONAL_ONLY:
            raise InvalidOption(
                flow, task, p.name,
                "positional-only parameters cannot be bound by name; drop the '/'",
            )
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            accepts_all = True
        elif is_context(p.name, p.annotation) or (mapped and p.name in MAPPED_NAMES):
            continue
        elif p.name in task_names:
            inputs.append(p.name)
        else:
            params.append(
                ParamSpec(name=p.name, type=_type_name(p.annotation),
                          required=p.default is inspect.Parameter.empty)
            )
    return tuple(params), tuple(inputs), accepts_all


def is_context(name: str, annotation: Any) -> bool:
    """A parameter that gets the TaskContext: named ``ctx`` or annotated ``TaskContext``."""
    return name == CTX_NAME or _is_context(annotation)


def _is_context(annotation: Any) -> bool:
    return getattr(annotation, "__name__", None) == "TaskContext"


def doc_and_source(fn: Callable[..., Any]) -> tuple[str, str]:
    doc = inspect.getdoc(fn) or ""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = ""
    return doc, source
