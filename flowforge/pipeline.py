"""Defining flows: ``register_task_pipeline`` as in Django Flow Forge, and a decorator form."""

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from flowforge.introspect import bind_plan, doc_and_source, function_ref
from flowforge.registry import REGISTRY
from flowforge.schedules import schedule_specs
from protocol.concurrency import ConcurrencySpec
from protocol.dag import PARAM_PREFIX, validate_flow
from protocol.errors import DuplicateTask, InvalidFlow, InvalidOption
from protocol.flows import FlowSpec, ParamSpec, TaskSpec
from protocol.limits import is_valid_name

_OPTIONS: dict[str, tuple[type, ...]] = {
    "function": (object,),
    "depends_on": (list, tuple),
    "queue": (str,),
    "verbose_name": (str,),
    "nested": (bool, str),
    "group": (str,),
    "retries": (int,),
    "retry_delay": (int, float),
    "timeout": (int, float),
    "map_over": (str,),
    "max_active": (int,),
    "allow_failures": (int, float),
    "chunk": (int,),
    "priority": (int,),
}


def register_task_pipeline(
    *,
    flow_name: str,
    pipeline: Mapping[str, Mapping[str, Any]],
    clear_existing_flow_in_db: bool = True,
    display_name: str = "",
    description: str = "",
    defaults: Mapping[str, Any] | None = None,
    schedules: Iterable[Mapping[str, Any]] | None = None,
    priority: int = 0,
    max_active_runs: int | None = None,
    concurrency: Mapping[str, Any] | None = None,
) -> FlowSpec:
    """Define a flow from ``{task_name: {"function": f, "depends_on": [...], ...}}``.

    Validates the whole definition (unknown dependency, cycle, duplicate, a function agents
    cannot import, options of the wrong type) and raises an ``InvalidFlow`` naming the
    offender; nothing is registered then. The flow is stored by the coordinator when
    ``flowforge register``/``flowforge dev`` send it, or by ``Client.register``.
    ``clear_existing_flow_in_db=False`` keeps an existing flow's definition and refuses a
    different one. ``defaults`` gives options (``retries``, ``retry_delay``, ``timeout``,
    ``queue``) to every task that does not set them itself. ``schedules`` (``Schedule(...)``)
    start it on time once registered; a schedule removed here is removed from the coordinator
    at the next registration. ``priority``, ``max_active_runs``, ``concurrency``: docs/limits.md.
    """
    if not isinstance(flow_name, str) or not is_valid_name(flow_name):
        raise InvalidFlow(
            f"flow_name {flow_name!r} is not valid: use letters, digits, '_' or '-', "
            "starting with a letter or '_'"
        )
    if not isinstance(pipeline, Mapping):
        raise InvalidFlow(f"flow {flow_name!r}: pipeline must be a dict of task name -> options")
    names = set(pipeline)
    tasks: list[TaskSpec] = []
    functions: dict[str, Callable[..., Any]] = {}
    described: set[str] = set()
    for name, options in pipeline.items():
        merged = {**_defaults(flow_name, defaults), **options} if isinstance(options, Mapping) \
            else options
        spec, fn = _task_spec(flow_name, name, merged, names, described)
        tasks.append(spec)
        functions[spec.function] = fn
    limits = _flow_limits(flow_name, priority, max_active_runs, concurrency)
    flow = FlowSpec(name=flow_name, tasks=tuple(tasks), display_name=display_name,
                    description=description, **limits)
    validate_flow(flow)
    specs = schedule_specs(flow_name, schedules)
    REGISTRY.add(flow, functions, replace=clear_existing_flow_in_db)
    REGISTRY.schedules[flow_name] = specs
    return flow


_DEFAULTABLE = ("queue", "retries", "retry_delay", "timeout")


def _flow_limits(flow: str, priority: Any, max_active_runs: Any,
                 concurrency: Mapping[str, Any] | None) -> dict[str, Any]:
    """The flow's priority and run limits, their types checked (their ranges are checked with
    the rest of the flow); ``concurrency`` as the flow stores it."""
    for option, value in (("priority", priority), ("max_active_runs", max_active_runs)):
        if not isinstance(value, int | None) or isinstance(value, bool):
            raise InvalidOption(flow, None, option, f"must be int, got {type(value).__name__}")
    spec = None
    if concurrency is not None:
        try:
            spec = msgspec.convert(dict(concurrency), ConcurrencySpec)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            raise InvalidOption(flow, None, "concurrency", f"{exc}; give "
                                '{"key": "{params.customer}", "limit": 1, "strategy": '
                                '"queue" | "cancel_newest" | "cancel_in_progress"}') from None
    return {"priority": priority, "max_active_runs": max_active_runs, "concurrency": spec}


def _defaults(flow: str, defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    if defaults is None:
        return {}
    if not isinstance(defaults, Mapping):
        raise InvalidOption(flow, None, "defaults", "must be a dict like {'retries': 2}")
    for key in defaults:
        if key not in _DEFAULTABLE:
            raise InvalidOption(flow, None, f"defaults.{key}",
                                f"cannot be a flow-wide default; use one of {', '.join(_DEFAULTABLE)}")
    return dict(defaults)


def _task_spec(
    flow: str, name: Any, options: Any, names: set[str], described: set[str]
) -> tuple[TaskSpec, Callable[..., Any]]:
    """One task's spec; its function's docstring and source only if no task in ``described``
    (the function refs already carrying them) has them yet: a 10,000-task fan-out of one
    function sends that source once, not 10,000 times."""
    if not isinstance(name, str) or not is_valid_name(name):
        raise InvalidFlow(
            f"flow {flow!r}: task name {name!r} is not valid: use letters, digits, '_' or '-'"
        )
    if not isinstance(options, Mapping):
        raise InvalidOption(flow, name, "options", "must be a dict like {'function': f}")
    for key, value in options.items():
        allowed = _OPTIONS.get(key)
        if allowed is None:
            raise InvalidOption(
                flow, name, str(key), f"unknown option; valid options are {', '.join(_OPTIONS)}"
            )
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            want = " or ".join(t.__name__ for t in allowed)
            raise InvalidOption(flow, name, key, f"must be {want}, got {type(value).__name__}")
    if "function" not in options:
        raise InvalidOption(flow, name, "function", "is required")
    fn = options["function"]
    ref = function_ref(flow, name, fn)
    depends_on = tuple(options.get("depends_on", ()))
    for dep in depends_on:
        if not isinstance(dep, str):
            raise InvalidOption(flow, name, "depends_on", f"must list task names, got {dep!r}")
    map_over = options.get("map_over")
    params, inputs, accepts_all = bind_plan(flow, name, fn, names, mapped=map_over is not None)
    depends_on, params = _mapped(map_over, depends_on, params)
    doc, source = ("", "") if ref in described else doc_and_source(fn)
    described.add(ref)
    timeout = options.get("timeout")
    return TaskSpec(
        name=name,
        function=ref,
        depends_on=depends_on,
        queue=options.get("queue", "default"),
        verbose_name=options.get("verbose_name", ""),
        group=_group(depends_on, options),
        retries=options.get("retries", 0),
        retry_delay_s=float(options.get("retry_delay", 0.0)),
        timeout_s=None if timeout is None else float(timeout),
        params=params,
        inputs=inputs,
        accepts_all_params=accepts_all,
        is_async=inspect.iscoroutinefunction(fn),
        doc=doc,
        source=source,
        map_over=map_over,
        max_active=options.get("max_active"),
        allow_failures=float(options.get("allow_failures", 0)),
        chunk=options.get("chunk", 1), priority=options.get("priority", 0),
        yields=inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn),
    ), fn


def _mapped(map_over: str | None, depends_on: tuple[str, ...],
            params: tuple[ParamSpec, ...]) -> tuple[tuple[str, ...], tuple[ParamSpec, ...]]:
    """A mapped task depends on the task it maps over, and needs the list parameter it maps
    over (as a list) even when its function does not take it."""
    if map_over is None:
        return depends_on, params
    if map_over.startswith(PARAM_PREFIX):
        name = map_over[len(PARAM_PREFIX):]
        others = tuple(p for p in params if p.name != name)
        return depends_on, (*others, ParamSpec(name=name, type="list", required=True))
    return (depends_on if map_over in depends_on else (*depends_on, map_over)), params


def _group(depends_on: tuple[str, ...], options: Mapping[str, Any]) -> str | None:
    """``group="name"`` or ``nested="name"``; ``nested=True`` nests under the first dependency."""
    if "group" in options:
        return str(options["group"])
    nested = options.get("nested", False)
    if isinstance(nested, str):
        return nested
    if nested and depends_on:
        return depends_on[0]
    return None


class Flow:
    """Decorator form: ``flow = Flow("etl")``, ``@flow.task(depends_on=[...])``, ``flow.register()``."""

    def __init__(self, name: str, *, display_name: str = "", description: str = "",
                 defaults: Mapping[str, Any] | None = None,
                 schedules: Iterable[Mapping[str, Any]] | None = None,
                 **limits: Any) -> None:
        """``limits``: ``priority``, ``max_active_runs``, ``concurrency`` as in
        ``register_task_pipeline``."""
        self.name = name
        self.limits = limits
        self.schedules = list(schedules or [])
        self.display_name = display_name
        self.description = description
        self.defaults = defaults
        self._pipeline: dict[str, dict[str, Any]] = {}

    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Any:
        """Add a function as a task; options as in ``register_task_pipeline``."""

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            task_name = name or f.__name__
            if task_name in self._pipeline:
                raise DuplicateTask(self.name, task_name)
            self._pipeline[task_name] = {"function": f, **options}
            return f

        return add(fn) if fn is not None else add

    def register(self, *, clear_existing_flow_in_db: bool = True) -> FlowSpec:
        return register_task_pipeline(
            flow_name=self.name,
            pipeline=self._pipeline,
            clear_existing_flow_in_db=clear_existing_flow_in_db,
            display_name=self.display_name,
            description=self.description,
            defaults=self.defaults,
            schedules=self.schedules,
            **self.limits,
        )
