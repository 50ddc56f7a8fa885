"""Benchmark flows — a wide fan-out, a single task, a long chain, a batch item, a mapped
fan-out, parents mapping child tasks — whose every task is a no-op (or next to one).

Agents import this module (``--import bench.flows``) to learn the one function they run;
the full-size flows are defined at import so that registration is never needed for that.
The benchmark process defines other sizes with ``fanout_flow``/``chain_flow`` as it needs.
"""

import flowforge
from flowforge import TaskContext, register_task_pipeline
from protocol.flows import FlowSpec
from protocol.limits import MAX_TASKS_PER_FLOW

FANOUT_WIDTH = 1000
CHAIN_LENGTH = 100
WIDE_WIDTH = min(20_000, MAX_TASKS_PER_FLOW - 2)
"""The widest root → N → join the coordinator accepts: N + 2 tasks may not pass the limit."""


def noop() -> None:
    """Do nothing: the benchmark measures the engine, not the task (no parameters to bind)."""
    return None


def single_flow() -> FlowSpec:
    """``bench_single``: one no-op task, the unit of the trigger workload."""
    return register_task_pipeline(flow_name="bench_single", pipeline={"only": {"function": noop}})


def noop_item(i: int) -> None:
    """Do nothing with one batch item's parameter (``{"i": n}``)."""
    return None


def item_flow() -> FlowSpec:
    """``bench_item``: one no-op task taking ``i``, the flow of the batch benchmark's items."""
    return register_task_pipeline(flow_name="bench_item", pipeline={"only": {"function": noop_item}})


def fanout_flow(width: int = FANOUT_WIDTH) -> FlowSpec:
    """``bench_fanout_<width>``: ``root`` → ``width`` parallel no-ops → ``join``."""
    middle = [f"t{i:05d}" for i in range(width)]
    pipeline: dict[str, dict[str, object]] = {"root": {"function": noop}}
    pipeline.update({name: {"function": noop, "depends_on": ["root"]} for name in middle})
    pipeline["join"] = {"function": noop, "depends_on": middle}
    return register_task_pipeline(flow_name=f"bench_fanout_{width}", pipeline=pipeline)


def map_items(n: int, mod: int = 0) -> list[int]:
    """The list to map over: ``list(range(n))``, or ``i % mod`` for each ``i`` when ``mod`` is
    set (one-digit items, so that a longer list fits in one task output)."""
    return [i % mod for i in range(n)] if mod else list(range(n))


def noop_map_item(item: int) -> int:
    """One mapped instance: return its item (a small int: every output fits in one message)."""
    return item


def map_join(each: list, n: int, mod: int = 0) -> int:
    """The mapped task's outputs in item order: their count when they are the items, else -1
    (the benchmark checks that the whole list arrived, in order)."""
    return len(each) if each == map_items(n, mod) else -1


def mapped_flow() -> FlowSpec:
    """``bench_mapped``: ``root`` returns ``map_items(n, mod)`` (run parameters) → ``each``, one
    instance per item (the default window: 1,000 at a time) → ``join`` takes ``each``'s list."""
    return register_task_pipeline(flow_name="bench_mapped", pipeline={
        "root": {"function": map_items},
        "each": {"function": noop_map_item, "map_over": "root"},
        "join": {"function": map_join, "depends_on": ["each"]},
    })


def chain_flow(length: int = CHAIN_LENGTH) -> FlowSpec:
    """``bench_chain_<length>``: ``t0`` → ``t1`` → … → ``t<length-1>``, one after another."""
    pipeline: dict[str, dict[str, object]] = {"t0": {"function": noop}}
    pipeline.update(
        {f"t{i}": {"function": noop, "depends_on": [f"t{i - 1}"]} for i in range(1, length)}
    )
    return register_task_pipeline(flow_name=f"bench_chain_{length}", pipeline=pipeline)


single_flow()
item_flow()
fanout_flow()
chain_flow()
mapped_flow()


def million_source(n: int):  # type: ignore[no-untyped-def]
    """Yields 0..n-1: the items arrive as they are made, however many."""
    yield from range(n)


def million_each(item: int) -> int:
    return item


def million_join(each: list) -> int:
    """How many outputs came, if they came in item order; -1 otherwise."""
    return len(each) if all(v == i for i, v in enumerate(each)) else -1


def million_flow(chunk: int = 1_000) -> FlowSpec:
    """``bench_million``: a generator → one no-op instance per item, ``chunk`` items per task
    message → a join taking every output in item order."""
    return register_task_pipeline(flow_name="bench_million", pipeline={
        "source": {"function": million_source},
        "each": {"function": million_each, "map_over": "source", "chunk": chunk},
        "join": {"function": million_join, "depends_on": ["each"]},
    })


million_flow()


@flowforge.task
def child_noop(item: int) -> int:
    """One child task: return its item (``ctx.map`` binds it to ``item``)."""
    return item


def map_children(ctx: TaskContext, children: int) -> int:
    """A parent: ``ctx.map`` of ``children`` no-op child tasks, waiting for them (blocking, as
    a sync task does); fails unless every output came back, in order."""
    outputs = ctx.map(child_noop, range(children))
    if outputs != list(range(children)):
        raise ValueError(f"the children's outputs came back wrong: {outputs[:5]!r}...")
    return len(outputs)


def mapped_parent(ctx: TaskContext, item: int, children: int) -> int:
    """A mapped instance that is a parent: maps ``children`` no-op child tasks."""
    return map_children(ctx, children)


def parents_flow() -> FlowSpec:
    """``bench_parents``: ``root`` returns ``list(range(n))`` → ``parent``, one instance per
    item, each mapping ``children`` no-op child tasks (run parameters ``n``, ``children``)."""
    return register_task_pipeline(flow_name="bench_parents", pipeline={
        "root": {"function": map_items},
        "parent": {"function": mapped_parent, "map_over": "root"},
    })


def one_parent_flow() -> FlowSpec:
    """``bench_one_parent``: one task mapping ``children`` no-op child tasks."""
    return register_task_pipeline(flow_name="bench_one_parent",
                                  pipeline={"parent": {"function": map_children}})


def train(lr: float = 0.01, depth: int = 3, batch_size: int = 32, optimizer: str = "adam",
          seed: int = 0) -> None:
    """Stands for a training task: bench.experiments writes what it would have logged."""


def experiments_flow() -> FlowSpec:
    """``bench_experiments``: one ``train`` task taking five parameters."""
    return register_task_pipeline(flow_name="bench_experiments",
                                  pipeline={"train": {"function": train}})


parents_flow()
one_parent_flow()
