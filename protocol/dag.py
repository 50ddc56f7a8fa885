"""Validation of flow definitions and the graph facts the scheduler needs (pure)."""

import graphlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from protocol.concurrency import MAX_LIMIT, MAX_PRIORITY, template_params, template_problem
from protocol.errors import (
    CycleError,
    DuplicateTask,
    InvalidFlow,
    InvalidOption,
    InvalidParams,
    UnknownDependency,
)
from protocol.flows import JSON_TYPES, FlowSpec, ParamSpec
from protocol.limits import MAX_ID_CHARS, MAX_TASKS_PER_FLOW, is_valid_name


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a path along dependencies that starts and ends on the same task (the one of
    the cycle that comes first in ``deps``), or None."""
    try:
        graphlib.TopologicalSorter(deps).prepare()
    except graphlib.CycleError as exc:
        loop = exc.args[1][-1:0:-1]  # graphlib goes from a dependency to its dependants
        order = {name: i for i, name in enumerate(deps)}
        first = min(range(len(loop)), key=lambda i: order.get(loop[i], len(order)))
        loop = loop[first:] + loop[:first]
        return [*loop, loop[0]]
    return None


def validate_flow(spec: FlowSpec) -> None:
    """Raise an InvalidFlow subclass naming the first offender, or return None."""
    if not is_valid_name(spec.name):
        raise InvalidFlow(
            f"flow name {spec.name!r} is not valid: use letters, digits, '_' or '-', "
            "starting with a letter or '_' (it becomes a NATS subject token)"
        )
    if not spec.tasks:
        raise InvalidFlow(f"flow {spec.name!r} has no tasks")
    if len(spec.tasks) > MAX_TASKS_PER_FLOW:
        raise InvalidFlow(
            f"flow {spec.name!r} has {len(spec.tasks)} tasks; the limit is {MAX_TASKS_PER_FLOW}"
        )
    names: set[str] = set()
    for task in spec.tasks:
        if task.name in names:
            raise DuplicateTask(spec.name, task.name)
        names.add(task.name)
        _validate_task_fields(spec.name, task)
    deps = {t.name: t.depends_on for t in spec.tasks}
    for task in spec.tasks:
        for dep in task.depends_on:
            if dep not in names:
                raise UnknownDependency(spec.name, task.name, dep)
    cycle = find_cycle(deps)
    if cycle:
        raise CycleError(spec.name, cycle)
    _validate_inputs(spec, deps)
    _validate_limits(spec)


def _validate_limits(spec: FlowSpec) -> None:
    """Priorities and concurrency limits of the flow and its tasks are in range."""
    checks: list[tuple[str | None, str, int | None, int, int]] = [
        (None, "priority", spec.priority, -MAX_PRIORITY, MAX_PRIORITY),
        (None, "max_active_runs", spec.max_active_runs, 1, MAX_LIMIT)]
    if spec.concurrency is not None:
        checks.append((None, "concurrency.limit", spec.concurrency.limit, 1, MAX_LIMIT))
        problem = template_problem(spec.concurrency.key)
        known = spec.param_specs()
        missing = [p for p in template_params(spec.concurrency.key) if p not in known]
        if problem is None and missing and not spec.accepts_any_param():
            problem = f"{{params.{missing[0]}}} is not a parameter of any of its tasks"
        if problem is not None:
            raise InvalidOption(spec.name, None, "concurrency.key", problem)
    for task in spec.tasks:
        checks += [(task.name, "priority", task.priority, -MAX_PRIORITY, MAX_PRIORITY),
                   (task.name, "max_active", task.max_active, 1, MAX_LIMIT)]
    for task_name, option, value, low, high in checks:
        if value is not None and not low <= value <= high:
            raise InvalidOption(spec.name, task_name, option, f"must be {low:,} to {high:,}")


def _validate_inputs(spec: FlowSpec, deps: Mapping[str, Sequence[str]]) -> None:
    """A parameter named like a task must name one of its ancestors."""
    ancestors = ancestors_of(deps)
    for task in spec.tasks:
        for name in task.inputs:
            if name not in ancestors[task.name]:
                raise InvalidOption(
                    spec.name, task.name, name,
                    f"the function takes a parameter named like task {name!r}, which is not "
                    f"upstream of {task.name!r}; add {name!r} to depends_on or rename it",
                )


def _validate_task_fields(flow: str, task: Any) -> None:
    if not is_valid_name(task.name):
        raise InvalidFlow(
            f"flow {flow!r}: task name {task.name!r} is not valid: use letters, digits, "
            "'_' or '-', starting with a letter or '_'"
        )
    if not is_valid_name(task.queue):
        raise InvalidOption(flow, task.name, "queue", f"{task.queue!r} is not a valid queue name")
    if len(set(task.depends_on)) != len(task.depends_on):
        raise InvalidOption(flow, task.name, "depends_on", "lists a task more than once")
    if task.name in task.depends_on:
        raise CycleError(flow, [task.name, task.name])
    if ":" not in task.function:
        raise InvalidOption(flow, task.name, "function", f"{task.function!r} is not module:name")
    if task.retries < 0:
        raise InvalidOption(flow, task.name, "retries", "must be 0 or more")
    if task.retry_delay_s < 0:
        raise InvalidOption(flow, task.name, "retry_delay", "must be 0 or more seconds")
    if task.timeout_s is not None and task.timeout_s <= 0:
        raise InvalidOption(flow, task.name, "timeout", "must be more than 0 seconds")
    for p in task.params:
        if not p.name.isidentifier():
            raise InvalidOption(flow, task.name, "params", f"{p.name[:100]!r} is not a parameter "
                                "name (a Python identifier)")
        if p.type is not None and p.type not in JSON_TYPES:
            raise InvalidOption(flow, task.name, p.name, f"unknown parameter type {p.type!r}")
    _validate_map(flow, task)


INSTANCE_SEP = "~"
"""Between a mapped task's name and an instance's index: ``T~3`` (never in a task name)."""
MAPPED_NAMES = ("item", "map_index")


def is_task_ref(name: str) -> bool:
    """A task's name, a mapped task's instance (``T~3``) or a child of either (``T/0``,
    ``T~3/0/1``): safe as a subject token."""
    base, *seqs = name.split("/")
    if len(name) > MAX_ID_CHARS or not all(_is_index(s) for s in seqs):
        return False
    task, sep, index = base.rpartition(INSTANCE_SEP)
    if not sep:
        return is_valid_name(base)
    return is_valid_name(task) and _is_index(index)


def _is_index(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) < 8
"""What each instance of a mapped task gets by name: its item and its place in the list."""
PARAM_PREFIX = "param:"
MAX_CHUNK = 10_000


def _validate_map(flow: str, task: Any) -> None:
    if task.map_over is None:
        for option, value in (("allow_failures", task.allow_failures or None),
                              ("chunk", None if task.chunk == 1 else task.chunk)):
            if value is not None:
                raise InvalidOption(flow, task.name, option, "applies to a mapped task only "
                                    "(one with map_over)")
        return
    over = task.map_over
    if task.yields:
        raise InvalidOption(flow, task.name, "map_over", "a mapped task's function cannot be a "
                            "generator; have the task before it yield the items")
    if over.startswith(PARAM_PREFIX):
        name = over[len(PARAM_PREFIX):]
        if not any(p.name == name for p in task.params):
            raise InvalidOption(flow, task.name, "map_over", f"run parameter {name!r} is not "
                                "among the task's parameters")
    elif over not in task.depends_on:
        raise InvalidOption(flow, task.name, "map_over", f"{over!r} is not a task it depends on; "
                            "map over an upstream task's output or 'param:<name>'")
    if task.max_active is not None and task.max_active < 1:
        raise InvalidOption(flow, task.name, "max_active", "must be 1 or more")
    if not 1 <= task.chunk <= MAX_CHUNK:
        raise InvalidOption(flow, task.name, "chunk", f"must be 1 to {MAX_CHUNK:,} items")
    if task.allow_failures < 0:
        raise InvalidOption(flow, task.name, "allow_failures", "must be 0 or more (a count, "
                            "or a fraction under 1)")


def ancestors_of(deps: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """Every task's transitive dependencies (the graph must be acyclic)."""
    memo: dict[str, frozenset[str]] = {}
    for name in graphlib.TopologicalSorter(deps).static_order():
        memo[name] = frozenset(deps[name]).union(*(memo[d] for d in deps[name]))
    return memo


def layers_of(deps: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Every task's longest distance from a task without dependencies (those are 0): the
    column or stage it is drawn in. Dependencies that are not keys of ``deps`` are ignored;
    the graph must be acyclic."""
    inside = {name: [d for d in ds if d in deps] for name, ds in deps.items()}
    layer: dict[str, int] = {}
    for name in graphlib.TopologicalSorter(inside).static_order():
        layer[name] = max((layer[d] + 1 for d in inside[name]), default=0)
    return layer


def _type_ok(expected: str | None, value: Any) -> bool:
    match expected:
        case None:
            return True
        case "int":
            return isinstance(value, int) and not isinstance(value, bool)
        case "float":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "str":
            return isinstance(value, str)
        case "bool":
            return isinstance(value, bool)
        case "list":
            return isinstance(value, list)
        case "dict":
            return isinstance(value, dict)
    return True


def check_params(
    flow: str, specs: Mapping[str, ParamSpec], params: Mapping[str, Any],
    allow_unknown: bool = False, known: Collection[str] | None = None,
) -> None:
    """Raise InvalidParams for a missing required, wrongly typed or unknown parameter.

    Unknown names (not in ``known``, default: ``specs``) are allowed when a task takes
    ``**kwargs`` (``allow_unknown``).
    """
    known = specs if known is None else known
    problems = []
    for name, spec in specs.items():
        if name not in params:
            if spec.required:
                problems.append(f"missing required parameter {name!r}")
        elif not _type_ok(spec.type, params[name]):
            got = type(params[name]).__name__
            problems.append(f"parameter {name!r} must be {spec.type}, got {got}")
    if not allow_unknown:
        for name in params:
            if name not in known:
                takes = ", ".join(sorted(known)) or "no parameters"
                problems.append(f"unknown parameter {name!r} (the flow takes {takes})")
    if problems:
        raise InvalidParams(f"flow {flow!r}: " + "; ".join(problems))
