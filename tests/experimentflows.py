"""Flows that log metrics, results and artifacts, for the experiments tests (registered when
imported; agents import them as ``tests.experimentflows``)."""

import asyncio
import math
import os
import threading
import time

from flowforge import TaskContext, register_task_pipeline
from protocol.flows import FlowSpec


def train(ctx: TaskContext, lr: float = 0.1, depth: int = 3, epochs: int = 4) -> dict:
    """Logs a loss per epoch (auto steps), an accuracy, an explicit step, bad values, a result
    and an artifact."""
    for epoch in range(epochs):
        ctx.log_metric("loss", round(1.0 / (epoch + 1) + lr, 6))
    accuracy = round(0.5 + depth / 10 - lr, 6)
    ctx.log_metrics({"accuracy": accuracy, "val.loss": round(lr * 2, 6)})
    ctx.log_metric("checkpointed", 1.0, step=10)
    ctx.log_metric("checkpointed", 2.0)
    ctx.log_metric("bad name", 1.0)
    ctx.log_metric("loss", math.nan)
    ctx.log_metric("loss", "high")  # type: ignore[arg-type]
    ctx.log_result(algorithm="hand_rolled", params={"lr": lr, "depth": depth},
                   metrics={"f1": round(accuracy - 0.05, 6)}, artifact=f"file:///models/{ctx.run_id}",
                   metadata={"rows": 500})
    ctx.log_artifact(f"s3://bucket/{ctx.run_id}/plot.png", kind="plot")
    return {"accuracy": accuracy}


def flaky(ctx: TaskContext) -> str:
    """Logs three points on each attempt; the first attempt then fails."""
    for i in range(3):
        ctx.log_metric("score", ctx.attempt * 10 + i)
    if ctx.attempt < 2:
        raise RuntimeError("the first attempt fails after logging")
    return "ok"


def many(ctx: TaskContext, n: int = 40) -> int:
    for i in range(n):
        ctx.log_metric("x", i)
    return n


async def async_logger(ctx: TaskContext) -> int:
    for i in range(5):
        ctx.log_metric("tick", i)
        await asyncio.sleep(0)
    return 5


def threaded(ctx: TaskContext, threads: int = 4, per_thread: int = 250) -> int:
    """Logs from several threads of its own at once."""
    def work(k: int) -> None:
        for _ in range(per_thread):
            ctx.log_metric(f"t{k}", float(k))

    started = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    return threads * per_thread


def waits_for_flag(ctx: TaskContext, flag: str = "") -> str:
    """Logs a point, then runs until the file ``flag`` exists (the test creates it once it
    has seen the point stored: sent while the task still runs)."""
    ctx.log_metric("early", 1.0)
    deadline = time.monotonic() + 60
    while not os.path.exists(flag):
        if time.monotonic() > deadline:
            raise TimeoutError("the flag never came")
        time.sleep(0.02)
    return "done"


def in_process(ctx: TaskContext, n: int = 40) -> int:
    """For --pool process: logs points, bad values and a result from a worker process."""
    ctx.log_metric("y", math.inf)
    ctx.log_result(algorithm="proc", metrics={"final": 1.0})
    for i in range(n):
        ctx.log_metric("y", float(i))
    return os.getpid()


def register_all() -> list[FlowSpec]:
    return [
        register_task_pipeline(flow_name="exp_train", pipeline={"train": {"function": train}}),
        register_task_pipeline(flow_name="exp_flaky", pipeline={
            "flaky": {"function": flaky, "retries": 1, "retry_delay": 0}}),
        register_task_pipeline(flow_name="exp_many", pipeline={
            "first": {"function": many}, "second": {"function": many}}),
        register_task_pipeline(flow_name="exp_async", pipeline={
            "async_logger": {"function": async_logger}, "threaded": {"function": threaded}}),
        register_task_pipeline(flow_name="exp_live", pipeline={
            "waits": {"function": waits_for_flag}}),
        register_task_pipeline(flow_name="exp_proc", pipeline={
            "in_process": {"function": in_process}}),
    ]


FLOWS = register_all()
