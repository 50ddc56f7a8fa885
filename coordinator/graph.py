"""A flow definition compiled for scheduling: dependants and dependency counts by task."""

from dataclasses import dataclass

from protocol.flows import FlowSpec, ParamSpec, TaskSpec


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    spec: FlowSpec
    version: str
    tasks: dict[str, TaskSpec]
    dependants: dict[str, tuple[str, ...]]
    param_names: frozenset[str]
    params: dict[str, ParamSpec]
    """The run parameters of all tasks, merged (what a run of the whole flow is checked by)."""
    accepts_any_param: bool

    @classmethod
    def compile(cls, spec: FlowSpec) -> "CompiledFlow":
        tasks = {t.name: t for t in spec.tasks}
        dependants: dict[str, list[str]] = {name: [] for name in tasks}
        params = spec.param_specs()
        for t in spec.tasks:
            for dep in t.depends_on:
                dependants[dep].append(t.name)
        return cls(
            spec=spec,
            version=spec.version(),
            tasks=tasks,
            dependants={k: tuple(v) for k, v in dependants.items()},
            param_names=frozenset(params),
            params=params,
            accepts_any_param=spec.accepts_any_param(),
        )
