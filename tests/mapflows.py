"""Flows with mapped tasks, registered on demand so other tests never see them."""

import os
import time

from flowforge import TaskContext, register_task_pipeline
from protocol.flows import FlowSpec
from tests.batchflows import hold_noted


def numbers(n: int) -> list[int]:
    return list(range(n))


def not_a_list() -> dict:
    return {"n": 3}


def square(ctx: TaskContext, item: int, map_index: int, fail_on: list | None = None) -> int:
    ctx.logger.info("squaring item %s at index %s", item, map_index)
    if fail_on and item in fail_on:
        raise ValueError(f"item {item} (index {map_index}) was asked to fail")
    return item * item


def total(square: list | None = None, picky_item: list | None = None) -> dict:
    values = square if square is not None else picky_item or []
    return {"sum": sum(v for v in values if v is not None), "failed": values.count(None)}


def register_fan(fan: str = "numbers", allow_failures: float = 0,
                 max_active: int | None = None) -> FlowSpec:
    """numbers → square (mapped) → total."""
    mapped: dict = {"function": square, "map_over": fan, "allow_failures": allow_failures}
    if max_active is not None:
        mapped["max_active"] = max_active
    return register_task_pipeline(flow_name="fan", pipeline={
        "numbers": {"function": numbers if fan == "numbers" else not_a_list},
        "not_a_list": {"function": not_a_list},
        "square": mapped,
        "total": {"function": total, "depends_on": ["square"]},
    })


def register_param_fan() -> FlowSpec:
    """square mapped over the run parameter ``xs``, then total."""
    return register_task_pipeline(flow_name="param_fan", pipeline={
        "square": {"function": square, "map_over": "param:xs"},
        "total": {"function": total, "depends_on": ["square"]},
    })


def slow_item(ctx: TaskContext, item: int, hold_s: float = 0.05) -> int:
    """Holds its slot a while, noted by instance in the ledger (``hold_noted``)."""
    hold_noted(ctx.task, hold_s)
    return item


def flaky_item(ctx: TaskContext, item: int) -> int:
    """Fails on the first attempt of every odd item."""
    if item % 2 and ctx.attempt == 1:
        raise RuntimeError(f"item {item} fails once")
    return item


def register_slow(max_active: int | None = None, n_param: bool = True) -> FlowSpec:
    mapped: dict = {"function": slow_item, "map_over": "numbers"}
    if max_active is not None:
        mapped["max_active"] = max_active
    return register_task_pipeline(flow_name="slow_fan", pipeline={
        "numbers": {"function": numbers},
        "slow_item": mapped,
    })


def register_flaky() -> FlowSpec:
    return register_task_pipeline(flow_name="flaky_fan", pipeline={
        "numbers": {"function": numbers},
        "flaky_item": {"function": flaky_item, "map_over": "numbers", "retries": 1},
    })


def picky_item(ctx: TaskContext, item: int) -> int:
    """Fails on odd items until the file FLOWFORGE_TEST_FIXED names exists; with
    FLOWFORGE_TEST_LEDGER set, notes each attempt it ran."""
    ledger = os.environ.get("FLOWFORGE_TEST_LEDGER")
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"{ctx.task} {ctx.attempt}\n")
    if item % 2 and not os.path.exists(os.environ.get("FLOWFORGE_TEST_FIXED", "")):
        raise RuntimeError(f"item {item} cannot be done yet")
    return item * 10


def register_picky() -> FlowSpec:
    return register_task_pipeline(flow_name="picky_fan", pipeline={
        "numbers": {"function": numbers},
        "picky_item": {"function": picky_item, "map_over": "numbers"},
        "total": {"function": total, "depends_on": ["picky_item"]},
    })


def register_chunked(chunk: int = 7, retries: int = 0, allow_failures: float = 0) -> FlowSpec:
    """numbers → square (mapped, ``chunk`` items per message) → total."""
    return register_task_pipeline(flow_name="chunked", pipeline={
        "numbers": {"function": numbers},
        "square": {"function": square, "map_over": "numbers", "chunk": chunk,
                   "retries": retries, "allow_failures": allow_failures, "max_active": 3},
        "total": {"function": total, "depends_on": ["square"]},
    })


def register_chunked_flaky(chunk: int = 4) -> FlowSpec:
    return register_task_pipeline(flow_name="chunked_flaky", pipeline={
        "numbers": {"function": numbers},
        "flaky_item": {"function": flaky_item, "map_over": "numbers", "chunk": chunk,
                       "retries": 1},
    })


def big_item(item: int, size: int = 20_000) -> str:
    """An output of ``size`` characters (pages of instances stop at the answer's size)."""
    return f"{item:06d}" + "x" * size


def register_big() -> FlowSpec:
    return register_task_pipeline(flow_name="big_fan", pipeline={
        "numbers": {"function": numbers},
        "big_item": {"function": big_item, "map_over": "numbers"},
    })


def count_pages(ctx: TaskContext) -> dict:
    """Reads big_item's outputs through ctx.mapped_outputs: how many, in order, which failed."""
    seen = list(ctx.mapped_outputs("big_item"))
    indexes = [int(v[:6]) for v in seen if v]
    return {"n": len(seen), "ordered": indexes == sorted(indexes),
            "missing": [i for i, v in enumerate(seen) if v is None]}


async def count_pages_async(ctx: TaskContext) -> dict:
    seen = [v async for v in ctx.amapped_outputs("big_item")]
    return {"n": len(seen), "first": seen[0][:6] if seen else None}


def takes_all(big_item: list) -> int:
    return len(big_item)


def register_big_join(join: str = "sync") -> FlowSpec:
    """numbers → big_item (mapped, large outputs) → a join reading them a page at a time."""
    fn = {"sync": count_pages, "async": count_pages_async, "param": takes_all}[join]
    return register_task_pipeline(flow_name="big_join", pipeline={
        "numbers": {"function": numbers},
        "big_item": {"function": big_item, "map_over": "numbers"},
        "join": {"function": fn, "depends_on": ["big_item"]},
    })


def generate(ctx: TaskContext, n: int, fail_after: int = -1):  # type: ignore[no-untyped-def]
    """Yields n short strings (more than one output may hold); with ``fail_after`` its first
    attempt fails after yielding that many."""
    for i in range(n):
        if i == fail_after and ctx.attempt == 1:
            raise RuntimeError(f"the source broke after {i} items")
        yield f"k{i:07d}"


async def agenerate(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        yield f"k{i:07d}"


def key_number(item: str) -> int:
    return int(item[1:])


def check_all(key_number: list) -> dict:
    return {"n": len(key_number), "in_order": key_number == list(range(len(key_number)))}


def register_streamed(source: str = "generate") -> FlowSpec:
    """A generator → a task mapped over its items, in chunks → a check of every output."""
    fn = {"generate": generate, "agenerate": agenerate}[source]
    return register_task_pipeline(flow_name="streamed", pipeline={
        "source": {"function": fn, "retries": 1},
        "key_number": {"function": key_number, "map_over": "source", "chunk": 500},
        "check_all": {"function": check_all, "depends_on": ["key_number"]},
    })


def slow_key(item: str, hold_s: float = 0.002) -> int:
    time.sleep(hold_s)
    return int(item[1:])


def register_streamed_slow() -> FlowSpec:
    """Like ``streamed``, its mapped task slow enough to restart the coordinator midway."""
    return register_task_pipeline(flow_name="streamed_slow", pipeline={
        "source": {"function": generate},
        "slow_key": {"function": slow_key, "map_over": "source", "chunk": 100, "max_active": 2},
    })


def trickle(n: int, pause_at: int = -1, pause_s: float = 0.0, fail_at: int = -1):  # type: ignore[no-untyped-def]
    """Yields n keys, pausing (or failing) after ``pause_at`` (``fail_at``) of them."""
    for i in range(n):
        if i == fail_at:
            raise RuntimeError(f"the source broke after {i} items")
        if i == pause_at:
            time.sleep(pause_s)
        yield f"k{i:07d}"


def register_trickle() -> FlowSpec:
    """A generator on its only attempt → a task mapped over its items as they come."""
    return register_task_pipeline(flow_name="trickle", pipeline={
        "source": {"function": trickle},
        "key_number": {"function": key_number, "map_over": "source", "chunk": 100},
        "check_all": {"function": check_all, "depends_on": ["key_number"]},
    })
