"""Flows with known outcomes for the metrics tests: a task that fails once then succeeds, a
mapped task, a child task, a task that always fails, and one on a queue no agent serves
(registered when imported)."""

import threading

import flowforge
from flowforge import TaskContext, register_task_pipeline
from protocol.flows import FlowSpec


def items() -> list[int]:
    return [1, 2, 3]


def flaky(ctx: TaskContext) -> str:
    """Fails on its first attempt (and is retried once)."""
    if ctx.attempt < 2:
        raise RuntimeError(f"flaky on attempt {ctx.attempt}")
    return "ok"


def square(item: int) -> int:
    return item * item


@flowforge.task
def halve(x: int) -> float:
    return x / 2


def parent(ctx: TaskContext) -> list:
    return ctx.map(halve, [2, 4])


def join(flaky: str, square: list, parent: list) -> dict:
    return {"flaky": flaky, "squares": square, "halves": parent}


def doomed() -> None:
    raise ValueError("always fails")


RELEASE = threading.Event()
"""Lets ``held``'s second attempt finish (in-process agents only)."""


def held(ctx: TaskContext) -> str:
    """Fails on its first attempt; the second runs until RELEASE is set."""
    if ctx.attempt < 2:
        raise RuntimeError("the first attempt fails")
    if not RELEASE.wait(60):
        raise TimeoutError("never released")
    return "released"


def register_all() -> list[FlowSpec]:
    flowforge.task(halve)
    return [
        register_task_pipeline(flow_name="measured", pipeline={
            "items": {"function": items},
            "flaky": {"function": flaky, "retries": 1, "retry_delay": 0},
            "square": {"function": square, "map_over": "items"},
            "parent": {"function": parent},
            "join": {"function": join, "depends_on": ["flaky", "square", "parent"]},
        }),
        register_task_pipeline(flow_name="doomed", pipeline={
            "doomed": {"function": doomed, "retries": 1, "retry_delay": 0},
            "after": {"function": items, "depends_on": ["doomed"]},
        }),
        register_task_pipeline(flow_name="stranded", pipeline={  # no agent serves its queue
            "waits": {"function": items, "queue": "idle"},
        }),
        register_task_pipeline(flow_name="held", pipeline={
            "held": {"function": held, "retries": 1, "retry_delay": 0},
        }),
    ]


FLOWS = register_all()
