"""Flows used by the tests; importable by agents as ``tests.taskflows`` or by file path."""

import asyncio
import logging
import os
import random
import time

from flowforge import TaskContext, register_task_pipeline

RANDOM_DAG_SIZE = 60


async def timed_step(ctx: TaskContext) -> dict:
    """Sleeps a little and returns when it started and ended, and where it ran."""
    start = time.time()
    await asyncio.sleep(0.01 + (sum(map(ord, ctx.task)) % 7) / 200)
    return {"start": start, "end": time.time(), "agent": ctx.agent_id}


def which_agent(ctx: TaskContext) -> dict:
    return {"agent": ctx.agent_id, "pid": os.getpid()}


def returns_a_set() -> set:
    return {object()}


def returns_too_much() -> str:
    return "x" * (300 * 1024)


def ok_task() -> str:
    return "fine"


def _random_dag(seed: int, n: int) -> dict[str, dict]:
    rng = random.Random(seed)
    pipeline: dict[str, dict] = {}
    names: list[str] = []
    for i in range(n):
        name = f"t{i:03d}"
        k = rng.randint(0, min(3, len(names)))
        pipeline[name] = {"function": timed_step, "depends_on": rng.sample(names, k)}
        names.append(name)
    return pipeline


register_task_pipeline(flow_name="random_dag", pipeline=_random_dag(1234, RANDOM_DAG_SIZE))

register_task_pipeline(
    flow_name="wide",
    pipeline={f"w{i}": {"function": timed_step, "depends_on": []} for i in range(8)},
)

register_task_pipeline(
    flow_name="routing",
    pipeline={
        **{f"cpu{i}": {"function": which_agent, "depends_on": []} for i in range(6)},
        **{f"gpu{i}": {"function": which_agent, "depends_on": [], "queue": "gpu"}
           for i in range(3)},
    },
)

register_task_pipeline(
    flow_name="bad_outputs",
    pipeline={
        "not_json": {"function": returns_a_set, "depends_on": []},
        "too_big": {"function": returns_too_much, "depends_on": []},
        "fine": {"function": ok_task, "depends_on": []},
    },
)


async def slow(seconds: float = 0.5) -> dict:
    """Sleeps, then says who finished it."""
    await asyncio.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}


async def very_slow() -> dict:
    await asyncio.sleep(3600)
    return {"slept": 3600, "pid": os.getpid()}


def reports_progress(ctx: TaskContext) -> str:
    for i in range(1, 5):
        ctx.progress(i / 4, f"step {i} of 4")
    ctx.checkpoint("all four steps done")
    return "done"


register_task_pipeline(
    flow_name="shutdown_mix",
    pipeline={
        "short": {"function": slow, "depends_on": []},
        "long": {"function": very_slow, "depends_on": []},
    },
)

register_task_pipeline(
    flow_name="progress",
    pipeline={"work": {"function": reports_progress, "depends_on": []}},
)


def stuck(ctx: TaskContext) -> str:
    """A sync task that never returns on its first attempt (it only finishes when retried)."""
    ctx.progress(0.5, "about to hang")
    if ctx.attempt == 1:
        while True:
            time.sleep(0.05)
    return f"finished on attempt {ctx.attempt} in pid {os.getpid()}"


def crashes_hard() -> str:
    os._exit(17)


register_task_pipeline(
    flow_name="stuck_then_fine",
    pipeline={"stuck": {"function": stuck, "depends_on": [], "timeout": 1, "retries": 1}},
)

register_task_pipeline(
    flow_name="hard_crash",
    pipeline={"boom": {"function": crashes_hard, "depends_on": []}},
)


def flaky(marker: str) -> str:
    """Fails until the file ``marker`` exists."""
    if not os.path.exists(marker):
        raise RuntimeError(f"{marker} does not exist yet")
    return "flaky is fine now"


def after_flaky(flaky: str) -> str:
    return f"after: {flaky}"


def sync_until_cancelled(ctx: TaskContext) -> str:
    while not ctx.cancelled:
        time.sleep(0.01)
    return "saw ctx.cancelled"


register_task_pipeline(
    flow_name="retryable",
    pipeline={
        "flaky": {"function": flaky, "depends_on": []},
        "after_flaky": {"function": after_flaky, "depends_on": ["flaky"]},
        "steady": {"function": ok_task, "depends_on": []},
    },
)

register_task_pipeline(
    flow_name="cancellable",
    pipeline={
        "async_long": {"function": very_slow, "depends_on": []},
        "sync_long": {"function": sync_until_cancelled, "depends_on": []},
        "later": {"function": ok_task, "depends_on": ["async_long"]},
    },
)


def big_output() -> str:
    return "y" * (200 * 1024)



def join_big(b0: str, b1: str, b2: str, b3: str, b4: str, b5: str) -> int:
    return sum(map(len, (b0, b1, b2, b3, b4, b5)))


register_task_pipeline(
    flow_name="fan_in_too_big",
    pipeline={
        **{f"b{i}": {"function": big_output, "depends_on": []} for i in range(6)},
        "join": {"function": join_big, "depends_on": [f"b{i}" for i in range(6)]},
    },
)


def sleeps_sync(seconds: float = 1.5) -> str:
    time.sleep(seconds)
    return "woke"


register_task_pipeline(
    flow_name="timeout_then_quick",
    pipeline={
        "slow": {"function": sleeps_sync, "depends_on": [], "timeout": 0.3},
        "quick": {"function": ok_task, "depends_on": [], "timeout": 1},
    },
)


def chatty(ctx: TaskContext) -> str:
    print("hello from print")
    ctx.logger.info("hello from the task logger")
    logging.getLogger("user.module").warning("a warning from user code")
    return "ok"


async def chatty_async(ctx: TaskContext) -> str:
    print("async hello")
    for i in range(3):
        ctx.logger.info("tick %d", i)
        await asyncio.sleep(0.3)
    return "ok"


register_task_pipeline(
    flow_name="chatty",
    pipeline={
        "talk": {"function": chatty, "depends_on": []},
        "talk_async": {"function": chatty_async, "depends_on": []},
    },
)


async def talk_until_released(ctx: TaskContext, release: str) -> str:
    """Logs one line, waits for the file ``release`` to exist, then logs another."""
    ctx.logger.info("waiting for the release")
    while not os.path.exists(release):
        await asyncio.sleep(0.05)
    ctx.logger.info("released, finishing")  # a log record: in-process agents' prints go to pytest
    return "done"


register_task_pipeline(
    flow_name="talk_until_released",
    pipeline={"listen": {"function": talk_until_released, "depends_on": []}},
)


def progress_storm(ctx: TaskContext) -> int:
    for i in range(20_000):
        ctx.progress(i / 20_000, f"item {i}")
    return 20_000


register_task_pipeline(
    flow_name="progress_storm",
    pipeline={"storm": {"function": progress_storm, "depends_on": []}},
)
