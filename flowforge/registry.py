"""The flows and functions registered in this process by user modules."""

from collections.abc import Callable
from typing import Any

from protocol.errors import FlowExists
from protocol.flows import FlowSpec
from protocol.schedules import ScheduleSpec


class Registry:
    """Flows defined by imported modules, and the functions agents may run."""

    def __init__(self) -> None:
        self.flows: dict[str, FlowSpec] = {}
        self.replace: dict[str, bool] = {}
        self.functions: dict[str, Callable[..., Any]] = {}
        self.schedules: dict[str, list[ScheduleSpec]] = {}
        """Each flow's schedules written in code (``schedules=[...]``)."""

    def add(self, spec: FlowSpec, functions: dict[str, Callable[..., Any]], replace: bool) -> None:
        old = self.flows.get(spec.name)
        if old is not None and not replace and old.version() != spec.version():
            raise FlowExists(
                f"flow {spec.name!r} is registered twice with different definitions; "
                "pass clear_existing_flow_in_db=True to replace it"
            )
        self.flows[spec.name] = spec
        self.replace[spec.name] = replace
        self.functions.update(functions)

    def clear(self) -> None:
        self.flows.clear()
        self.replace.clear()
        self.functions.clear()
        self.schedules.clear()


REGISTRY = Registry()
"""Filled as modules call ``register_task_pipeline``; read by the CLI and agents."""
