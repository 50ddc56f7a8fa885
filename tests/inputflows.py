"""Flows for the bad-input tests; registered on demand so other tests never see them."""

import importlib
import sys
from types import ModuleType

from flowforge import TaskContext, register_task_pipeline
from protocol.flows import FlowSpec

SEED_MODULE = "examples.seed_pipelines"


def greet(name: str, times: int = 1) -> str:
    """Needs a ``name`` run parameter: a trigger without one is refused."""
    return " ".join([f"hello {name}"] * times)


def greet_twice(name: str, times: int) -> str:
    """Like greet, but ``times`` is required: a flow changed under its schedules."""
    return greet(name, times)


def broken() -> None:
    raise RuntimeError("the source system is down")


def register_broken() -> FlowSpec:
    return register_task_pipeline(flow_name="broken", pipeline={
        "broken": {"function": broken, "depends_on": []}})


def noop() -> str:
    return "done"


def which_hour(ctx: TaskContext) -> str | None:
    """The nominal time a scheduled run handles, as the task sees it."""
    return None if ctx.scheduled_for is None else ctx.scheduled_for.isoformat()


def register_which_hour() -> FlowSpec:
    return register_task_pipeline(flow_name="which_hour", pipeline={
        "which_hour": {"function": which_hour, "depends_on": []},
    })


def register_greeting() -> FlowSpec:
    return register_task_pipeline(flow_name="greeting", pipeline={
        "greet": {"function": greet, "depends_on": []},
    })


def register_noop(flow_name: str = "noop") -> FlowSpec:
    return register_task_pipeline(flow_name=flow_name, pipeline={
        "noop": {"function": noop, "depends_on": []},
    })


def load_seed_pipelines() -> ModuleType:
    """Import ``examples.seed_pipelines`` so its flows are registered in this test's registry.

    The registry is reset after each test and a module registers only when it is executed,
    so a module imported by an earlier test is reloaded.
    """
    module = sys.modules.get(SEED_MODULE)
    return importlib.reload(module) if module else importlib.import_module(SEED_MODULE)
