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


def hold_noted(name: str, hold_s: float) -> None:
    """Sleep ``hold_s``; with FLOWFORGE_TEST_LEDGER set, append ``start <name> <t>`` and
    ``end <name> <t>`` lines to that file around it (a test counts what ran at once)."""
    ledger = os.environ.get("FLOWFORGE_TEST_LEDGER")
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"start {name} {time.time()!r}\n")
    time.sleep(hold_s)
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"end {name} {time.time()!r}\n")


def slow_square(ctx: TaskContext, x: int, hold_s: float = 0.2) -> int:
    """Holds its slot a while, noted by run in the ledger (``hold_noted``)."""
    hold_noted(ctx.run_id, hold_s)
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
