"""Flows whose tasks start child tasks (``ctx.map``, ``ctx.spawn``, ``ctx.gather``).

Child functions are registered with ``@flowforge.task`` when imported (for agent processes)
and again by ``register_*`` (tests run with a fresh registry each)."""

import os
import time
from typing import Any

import flowforge
from flowforge import ChildFailed, TaskContext, register_task_pipeline
from protocol.flows import FlowSpec


@flowforge.task
def double(x: int) -> int:
    return 2 * x


@flowforge.task(retries=2)
def flaky_double(x: int, ctx: TaskContext) -> int:
    ctx.logger.info("doubling %s on attempt %s", x, ctx.attempt)
    if ctx.attempt < 2:
        raise RuntimeError(f"flaky on attempt {ctx.attempt}")
    return 2 * x


@flowforge.task
def picky(item: int, map_index: int) -> int:
    if item % 5 == 3:
        raise ValueError(f"item {item} at {map_index} is not wanted")
    return item


def fan_out(ctx: TaskContext, n: int) -> dict:
    """A sync parent: maps ``double`` over n numbers and waits (blocking)."""
    outputs = ctx.map(double, range(n))
    return {"sum": sum(outputs), "first": outputs[:3], "n": len(outputs)}


async def fan_out_async(ctx: TaskContext, n: int) -> dict:
    outputs = await ctx.map(double, range(n))
    return {"sum": sum(outputs), "n": len(outputs)}


def spawn_and_gather(ctx: TaskContext) -> list:
    a = ctx.spawn(double, x=20)
    b = ctx.spawn(flaky_double, x=3)
    ctx.spawn(double, x=1)  # never gathered: the task ends after it all the same
    return ctx.gather(b, a)


def tolerant(ctx: TaskContext, n: int) -> dict:
    results = ctx.map(picky, range(n), return_exceptions=True)
    failed = [r.name for r in results if isinstance(r, ChildFailed)]
    return {"ok": [r for r in results if not isinstance(r, ChildFailed)], "failed": failed}


def strict(ctx: TaskContext, n: int) -> list:
    return ctx.map(picky, range(n))


@flowforge.task
def leaf(x: int) -> int:
    return x


@flowforge.task
def middle(ctx: TaskContext, x: int) -> int:
    return sum(ctx.map(leaf, [x * 10 + i for i in range(3)]))


def top(ctx: TaskContext, width: int) -> int:
    """Three levels: top → middle (width) → leaf (3 each)."""
    return sum(ctx.map(middle, range(width)))


@flowforge.task
def deeper(ctx: TaskContext, level: int) -> int:
    return level if level >= 50 else ctx.map(deeper, [level + 1])[0]


def dive(ctx: TaskContext) -> int:
    return ctx.map(deeper, [1])[0]


def too_many(ctx: TaskContext, n: int) -> list:
    return ctx.map(double, range(n))


def changes_its_mind(ctx: TaskContext) -> list:
    """Spawns other children on its second attempt than on its first."""
    fn = double if ctx.attempt == 1 else leaf
    out = ctx.map(fn, [1, 2])
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails after its children")
    return out


def not_registered_child(x: int) -> int:
    return x


def spawns_unregistered(ctx: TaskContext) -> list:
    return ctx.map(not_registered_child, [1])


@flowforge.task
def slow_item(ctx: TaskContext, item: int, hold_s: float = 0.2) -> int:
    ledger = os.environ.get("FLOWFORGE_TEST_LEDGER")
    start = time.time()
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.01)
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"{ctx.task} {ctx.attempt} {start} {time.time()}\n")
    return item


def slow_parent(ctx: TaskContext, n: int, hold_s: float = 0.2) -> int:
    return sum(ctx.map(slow_item, range(n), hold_s=hold_s))


def prepare(n: int) -> int:
    return n


def train_model(ctx: TaskContext, prepare: int) -> dict:
    """Maps ``picky`` over ``prepare`` items (every fifth fails: tolerated), then ``middle`` over
    two (each with three children of its own)."""
    results = ctx.map(picky, range(prepare), return_exceptions=True)
    nested = ctx.map(middle, range(2))
    return {"ok": sum(1 for r in results if not isinstance(r, ChildFailed)), "nested": sum(nested)}


def report(train_model: dict) -> int:
    return train_model["ok"]


def register_chain() -> FlowSpec:
    """prepare → train_model (with children, some failed, some nested) → report."""
    return register_task_pipeline(flow_name="chain", pipeline={
        "prepare": {"function": prepare},
        "train_model": {"function": train_model, "depends_on": ["prepare"]},
        "report": {"function": report, "depends_on": ["train_model"]},
    })


def _flow(name: str, fn: Any, **options: Any) -> FlowSpec:
    return register_task_pipeline(flow_name=name, pipeline={"parent": {"function": fn,
                                                                       **options}})


def register_all() -> list[FlowSpec]:
    """Every flow of this module (and its child functions, again)."""
    for fn in (double, picky, leaf, middle, deeper, slow_item):
        flowforge.task(fn)
    flowforge.task(retries=2)(flaky_double)
    return [
        _flow("kids", fan_out), _flow("kids_async", fan_out_async),
        _flow("spawn_gather", spawn_and_gather), _flow("tolerant", tolerant),
        _flow("strict", strict), _flow("nest", top), _flow("dive", dive),
        _flow("too_many", too_many), _flow("unregistered", spawns_unregistered),
        _flow("fickle", changes_its_mind, retries=1), _flow("slow_kids", slow_parent),
        *register_more(), register_chain(),
    ]


def fan_item(ctx: TaskContext, item: int, width: int = 20) -> int:
    """A mapped instance that maps its own children."""
    return sum(ctx.map(double, [item * 100 + i for i in range(width)]))


def abandon(ctx: TaskContext, n: int, hold_s: float = 30.0) -> None:
    """Spawns slow children, then fails without waiting for them (no retries left)."""
    for i in range(n):
        ctx.spawn(slow_item, item=i, hold_s=hold_s)
    ctx.gather()  # sends them (gathering none)
    raise RuntimeError("the parent gave up")


@flowforge.task(queue="kids")
def kid(ctx: TaskContext, item: int, hold_s: float = 1.0) -> int:
    return slow_item(ctx, item, hold_s)


def parent_of_kids(ctx: TaskContext, n: int, hold_s: float = 1.0) -> list:
    return ctx.map(kid, range(n), hold_s=hold_s)


def register_more() -> list[FlowSpec]:
    flowforge.task(queue="kids")(kid)
    return [
        register_task_pipeline(flow_name="parents", pipeline={
            "parent": {"function": fan_item, "map_over": "param:xs"}}),
        _flow("abandon", abandon), _flow("kids_elsewhere", parent_of_kids),
    ]


FLOWS = register_all()
