"""Flows for the batch tests; registered on demand so other tests never see them."""

import os
import time

from flowforge import TaskContext, register_task_pipeline
from protocol.flows import FlowSpec


def square(x: int, fail: bool = False) -> int:
    if fail:
        raise ValueError(f"item {x} was asked to fail")
    return x * x


def register_square(flow_name: str = "square") -> FlowSpec:
    return register_task_pipeline(flow_name=flow_name, pipeline={
        "square": {"function": square, "depends_on": []}})


def slow_square(ctx: TaskContext, x: int, hold_s: float = 0.2) -> int:
    """Holds its slot a while and, with FLOWFORGE_TEST_LEDGER set, appends when it started and
    ended to that file (a test counts how many ran at once)."""
    ledger = os.environ.get("FLOWFORGE_TEST_LEDGER")
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"start {ctx.run_id} {time.time()!r}\n")
    time.sleep(hold_s)
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"end {ctx.run_id} {time.time()!r}\n")
    return x * x


def register_slow_square(flow_name: str = "slow_square") -> FlowSpec:
    return register_task_pipeline(flow_name=flow_name, pipeline={
        "slow_square": {"function": slow_square, "depends_on": []}})


def strict_square(x: int, y: int) -> int:
    return x * y


def register_square_needing_y() -> FlowSpec:
    """``square`` changed: it now needs ``y`` (items submitted before it lack it)."""
    return register_task_pipeline(flow_name="square", clear_existing_flow_in_db=True, pipeline={
        "square": {"function": strict_square, "depends_on": []}})


def square_noting(x: int, note: str = "") -> int:
    return x * x


def register_square_with_note() -> FlowSpec:
    """``square`` that takes a long text too (parameters near the size limit)."""
    return register_task_pipeline(flow_name="square", pipeline={
        "square": {"function": square_noting, "depends_on": []}})
