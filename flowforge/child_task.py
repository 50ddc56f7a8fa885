"""``@flowforge.task``: a function tasks may run as child tasks, with how to run it."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flowforge.introspect import function_ref
from flowforge.registry import REGISTRY
from protocol.limits import NAME_RE

F = TypeVar("F", bound=Callable[..., Any])
ATTR = "__flowforge_child__"
CHILDREN = "(child tasks)"
"""How errors name the place a child function is defined for (it has no flow)."""


@dataclass(frozen=True, slots=True)
class ChildOptions:
    queue: str | None = None
    """None: the queue of the task that spawns it."""
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None


def task(fn: F | None = None, /, *, queue: str | None = None, retries: int = 0,
         retry_delay: float = 0.0, timeout: float | None = None) -> Any:
    """Register a module-level function that running tasks may start as child tasks
    (``ctx.spawn``, ``ctx.map``), with the queue it runs on (by default its parent's), its
    retries, the delay before a retry and its timeout in seconds. Agents that import the
    module can run it; a function that is a task of a registered flow needs no decorator."""
    options = _checked(queue, retries, retry_delay, timeout)

    def register(f: F) -> F:
        if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
            raise ValueError(f"@flowforge.task: {f.__qualname__} is a generator; a child task "
                             "returns its output (map over a generator's items with map_over)")
        ref = function_ref(CHILDREN, getattr(f, "__name__", "?"), f, resolve=False)
        REGISTRY.functions[ref] = f
        setattr(f, ATTR, options)
        return f

    return register(fn) if fn is not None else register


def _checked(queue: str | None, retries: int, retry_delay: float,
             timeout: float | None) -> ChildOptions:
    if queue is not None and (not isinstance(queue, str) or not NAME_RE.match(queue)):
        raise ValueError(f"@flowforge.task: queue {queue!r} is not a valid queue name")
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 100:
        raise ValueError("@flowforge.task: retries must be a whole number from 0 to 100")
    if not isinstance(retry_delay, int | float) or retry_delay < 0:
        raise ValueError("@flowforge.task: retry_delay must be seconds, 0 or more")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ValueError("@flowforge.task: timeout must be seconds, more than 0")
    return ChildOptions(queue, retries, float(retry_delay),
                        None if timeout is None else float(timeout))


def options_of(fn: Callable[..., Any]) -> ChildOptions:
    return getattr(fn, ATTR, None) or ChildOptions()
