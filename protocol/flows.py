"""Flow and task definitions as stored and sent: what to run, in which order, where."""

import hashlib

import msgspec

from protocol.concurrency import ConcurrencySpec

JSON_TYPES = ("int", "float", "str", "bool", "list", "dict")


class ParamSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A run parameter a task's function takes, from its signature."""

    name: str
    type: str | None = None
    """One of JSON_TYPES when annotated with a plain type, else None (anything)."""
    required: bool = True
    """False when the function gives a default."""


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One task of a flow (fields at their defaults are left out of its JSON, so a field added
    later does not change the version of the flows that do not use it)."""

    name: str
    function: str
    """``module:qualname`` of a module-level function."""
    depends_on: tuple[str, ...] = ()
    queue: str = "default"
    verbose_name: str = ""
    group: str | None = None
    """Nested tasks: drawn inside this group; no effect on execution."""
    retries: int = 0
    retry_delay_s: float = 0.0
    timeout_s: float | None = None
    params: tuple[ParamSpec, ...] = ()
    """Run parameters the function takes."""
    inputs: tuple[str, ...] = ()
    """Upstream tasks whose outputs the function takes, by parameter name."""
    accepts_all_params: bool = False
    """The function takes ``**kwargs``: it gets every run parameter."""
    is_async: bool = False
    doc: str = ""
    source: str = ""
    """The function's docstring and source, on the first task of each function only
    (``FlowSpec.described`` finds them for the others)."""
    map_over: str | None = None
    """A mapped task: one instance per item of this upstream task's output (a JSON list), or
    of the run parameter ``param:<name>``; each gets ``item`` and ``map_index`` by name."""
    max_active: int | None = None
    """A mapped task's instances queued or running at once within its run; any other task's
    instances queued or running at once across all runs (None: no limit of its own)."""
    priority: int = 0
    """Added to its run's priority: within a queue, higher goes first."""
    allow_failures: float = 0
    chunk: int = 1
    yields: bool = False
    """The function is a generator: its items are sent as they come (a mapped task downstream
    maps over them, however many) and its output is how many it yielded."""
    """A mapped task's items per task message (short items: one lease and one report for
    several); each item is still run, recorded and retried on its own."""
    """A mapped task still succeeds with this many failed instances (a count, or a fraction
    of them when under 1); its dependants get the failures listed."""


class FlowSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A flow: named tasks and their dependencies."""

    name: str
    tasks: tuple[TaskSpec, ...]
    display_name: str = ""
    description: str = ""
    priority: int = 0
    """Its runs' priority unless a run is started with its own."""
    max_active_runs: int | None = None
    """Runs going at once; more wait (pending) and start in order as others end."""
    concurrency: ConcurrencySpec | None = None
    """Runs going at once per key rendered from the run's parameters."""

    def version(self) -> str:
        """Content hash: the same definition always gets the same version."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:12]

    def described(self, task: TaskSpec) -> tuple[str, str]:
        """The docstring and source of ``task``'s function, from whichever task carries them."""
        if task.doc or task.source:
            return task.doc, task.source
        for other in self.tasks:
            if other.function == task.function and (other.doc or other.source):
                return other.doc, other.source
        return "", ""

    def queues(self) -> set[str]:
        return {t.queue for t in self.tasks}

    def param_specs(self, only: frozenset[str] | None = None) -> dict[str, ParamSpec]:
        """Run parameters over all tasks (or ``only`` these), merged by name.

        A parameter is required when any task needs it without a default; its type
        is the first declared one.
        """
        merged: dict[str, ParamSpec] = {}
        for task in self.tasks:
            if only is not None and task.name not in only:
                continue
            for p in task.params:
                old = merged.get(p.name)
                if old is None:
                    merged[p.name] = p
                else:
                    merged[p.name] = ParamSpec(
                        name=p.name,
                        type=old.type or p.type,
                        required=old.required or p.required,
                    )
        return merged

    def accepts_any_param(self, only: frozenset[str] | None = None) -> bool:
        """True when a task (of ``only``) takes ``**kwargs``, so any parameter is welcome."""
        return any(t.accepts_all_params for t in self.tasks if only is None or t.name in only)
