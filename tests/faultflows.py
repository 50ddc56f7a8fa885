"""Flows for the fault-injection tests: many short tasks in layers."""

import asyncio
import random

from flowforge import TaskContext, register_task_pipeline


async def step(ctx: TaskContext) -> int:
    await asyncio.sleep(0.02 + random.random() * 0.03)
    return ctx.attempt


def layered(n: int, width: int) -> dict[str, dict]:
    """``n`` tasks in layers of ``width``; each depends on one task of the layer before."""
    pipeline: dict[str, dict] = {}
    for i in range(n):
        deps = [f"s{i - width:04d}"] if i >= width else []
        pipeline[f"s{i:04d}"] = {"function": step, "depends_on": deps}
    return pipeline


register_task_pipeline(flow_name="faults_200", pipeline=layered(200, 20))
register_task_pipeline(flow_name="faults_500", pipeline=layered(500, 25))
