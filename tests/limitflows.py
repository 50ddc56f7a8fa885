"""Flows for the limit tests: tasks that hold their slot a while and note it in the ledger
(``hold_noted``, as ``<run>/<task>``); registered on demand so other tests never see them."""

from typing import Any

from flowforge import TaskContext, register_task_pipeline
from protocol.flows import FlowSpec
from tests.batchflows import hold_noted


def hold(ctx: TaskContext, hold_s: float = 0.2, customer: str = "") -> str:
    """Holds its slot ``hold_s``, noted in the ledger as ``<run>/<task>``."""
    hold_noted(f"{ctx.run_id}/{ctx.task}", hold_s)
    return ctx.task


def register_wide(name: str = "gpu_fan", width: int = 6, queue: str = "gpu",
                  **flow_options: Any) -> FlowSpec:
    """``width`` independent tasks on ``queue``."""
    return register_task_pipeline(flow_name=name, pipeline={
        f"t{i}": {"function": hold, "queue": queue} for i in range(width)}, **flow_options)


def register_capped(max_active: int = 1) -> FlowSpec:
    """``load`` at most ``max_active`` at once across runs, then ``report``."""
    return register_task_pipeline(flow_name="capped", pipeline={
        "load": {"function": hold, "max_active": max_active},
        "report": {"function": hold, "depends_on": ["load"]}})


def register_keyed(strategy: str, limit: int = 1) -> FlowSpec:
    """One task a run; at most ``limit`` runs going per customer."""
    return register_task_pipeline(flow_name=f"keyed_{strategy}", pipeline={
        "work": {"function": hold}},
        concurrency={"key": "{params.customer}", "limit": limit, "strategy": strategy})


def register_bulk(width: int = 1000) -> FlowSpec:
    """``width`` short tasks of priority 0 (the flow's default)."""
    return register_task_pipeline(flow_name="bulk", pipeline={
        f"b{i}": {"function": hold} for i in range(width)})


def register_urgent() -> FlowSpec:
    """One task; its runs are priority 9 unless started with another."""
    return register_task_pipeline(flow_name="urgent", pipeline={"u": {"function": hold}},
                                  priority=9)
