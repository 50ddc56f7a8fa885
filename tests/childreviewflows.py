"""Flows for the child-task fault tests (tests/test_children_review.py): parents whose children
take a while, parents that wait for a go-ahead before they spawn, a parent that fails once with
its children still running, parents that are mapped instances (and chunks of them).

Each child and parent appends a line to ``$FLOWFORGE_TEST_LEDGER`` when it ends (``name attempt
start end``), so a test can count how often each one ran."""

import asyncio
import os
import time
from pathlib import Path

import flowforge
from flowforge import TaskContext, register_task_pipeline
from protocol.flows import FlowSpec


def _note(ctx: TaskContext, start: float) -> None:
    ledger = os.environ.get("FLOWFORGE_TEST_LEDGER")
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"{ctx.task} {ctx.attempt} {start} {time.time()}\n")


@flowforge.task
def held(ctx: TaskContext, item: int, hold_s: float = 0.2) -> int:
    """A child that takes ``hold_s`` (stops early once cancelled)."""
    start = time.time()
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.01)
    _note(ctx, start)
    return item


@flowforge.task
def fails_once(ctx: TaskContext, item: int) -> int:
    """A child that fails on its first attempt (at once), then returns its item."""
    start = time.time()
    _note(ctx, start)
    if ctx.attempt == 1:
        raise RuntimeError(f"child {ctx.task} fails on its first attempt")
    return item


def slow_parent(ctx: TaskContext, n: int, hold_s: float = 0.2) -> int:
    start = time.time()
    out = sum(ctx.map(held, range(n), hold_s=hold_s))
    _note(ctx, start)
    return out


def gated_parent(ctx: TaskContext, gate: str, n: int) -> int:
    """Says it is running (``<gate>.ready``), waits for ``<gate>.go``, then maps ``n`` children
    (``ctx.map`` of ``held``) — what a test holds it at to kill the coordinator first."""
    Path(gate + ".ready").write_text(str(ctx.attempt))
    while not Path(gate + ".go").exists():
        time.sleep(0.02)
    return sum(ctx.map(held, range(n), hold_s=0.0))


def retried_parent(ctx: TaskContext, n: int, hold_s: float) -> list:
    """Maps one child that fails once and ``n`` slow ones: its first attempt fails fast with
    the slow ones still running; its second finds them."""
    start = time.time()
    first = ctx.spawn(fails_once, item=-1)
    rest = [ctx.spawn(held, item=i, hold_s=hold_s) for i in range(n)]
    out = ctx.gather(first, *rest)
    _note(ctx, start)
    return out


@flowforge.task
def gated(ctx: TaskContext, item: int, gate: str) -> int:
    """A child that waits for the file ``gate`` (a minute at the most)."""
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    return item


async def two_maps(ctx: TaskContext, gate: str) -> dict:
    """Two maps waited for at once: the slow one's children wait for ``<gate>.go``, which the
    test makes once this task wrote ``<gate>.quick`` — after the quick map came back."""
    slow = asyncio.ensure_future(ctx.map(gated, [10, 11], gate=gate + ".go"))
    quick = await ctx.map(held, [1, 2], hold_s=0.0)
    Path(gate + ".quick").write_text("")
    return {"quick": quick, "slow": await slow}


async def split_maps(ctx: TaskContext, n: int) -> dict:
    """Two maps at once whose children go out in two spawn requests (``n`` >= 1,000 fill the
    first): the small map's children are all in the second."""
    big = asyncio.ensure_future(ctx.map(held, range(n), hold_s=0.0))
    small = asyncio.ensure_future(ctx.map(held, [7, 8], hold_s=0.0))
    return {"big": sum(await big), "small": await small}


def flaky_children(ctx: TaskContext, n: int) -> list:
    """Maps ``n`` children that each fail on their first attempt (and have no retries)."""
    return ctx.map(fails_once, range(n))


async def async_parent(ctx: TaskContext, n: int, hold_s: float) -> int:
    return sum(await ctx.map(held, range(n), hold_s=hold_s))


def items(n: int) -> list[int]:
    return list(range(n))


def instance_parent(ctx: TaskContext, item: int, children: int) -> list:
    """A mapped instance that is a parent: children item * 100 + i."""
    return ctx.map(held, [item * 100 + i for i in range(children)], hold_s=0.0)


def slow_instance_parent(ctx: TaskContext, item: int, children: int, hold_s: float) -> int:
    """A mapped instance that maps ``children`` children holding ``hold_s`` each."""
    return sum(ctx.map(held, range(children), hold_s=hold_s))


def _one(name: str, fn: object, **options: object) -> FlowSpec:
    return register_task_pipeline(flow_name=name,
                                  pipeline={"parent": {"function": fn, **options}})


def register_all() -> list[FlowSpec]:
    """Every flow of this module (and its child functions, again: tests reset the registry)."""
    for fn in (held, fails_once, gated):
        flowforge.task(fn)
    mapped = {"root": {"function": items},
              "parent": {"function": instance_parent, "map_over": "root"}}
    return [
        _one("rv_slow", slow_parent), _one("rv_slow_retried", slow_parent, retries=1),
        _one("rv_gated", gated_parent), _one("rv_retried", retried_parent, retries=1),
        _one("rv_two_maps", two_maps), _one("rv_async_timeout", async_parent, timeout=1.0),
        _one("rv_sync_timeout", slow_parent, timeout=1.0),
        _one("rv_flaky_children", flaky_children), _one("rv_split_maps", split_maps),
        register_task_pipeline(flow_name="rv_mapped", pipeline=mapped),
        register_task_pipeline(flow_name="rv_chunked", pipeline={
            **mapped, "parent": {**mapped["parent"], "chunk": 3}}),
        register_task_pipeline(flow_name="rv_mapped_slow", pipeline={
            **mapped, "parent": {**mapped["parent"], "function": slow_instance_parent}}),
    ]


FLOWS = register_all()
