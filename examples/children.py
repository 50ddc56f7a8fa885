"""Child tasks: a search that starts one child per setting, each of which starts one child per
fold — parallel work inside a task, and inside that, without a deadlock on a busy agent."""

import random

import flowforge
from flowforge import TaskContext, register_task_pipeline


@flowforge.task(retries=1)
def score_fold(ctx: TaskContext, depth: int, fold: int) -> float:
    """Stands in for fitting one fold: a real one would train and evaluate a model."""
    rng = random.Random(depth * 100 + fold)
    return round(0.70 + 0.03 * min(depth, 6) - 0.004 * depth ** 1.5 + rng.uniform(-0.01, 0.01), 4)


@flowforge.task
def try_depth(ctx: TaskContext, depth: int, folds: int = 5) -> dict:
    scores = ctx.map(score_fold, range(folds), depth=depth)  # binds each fold to `fold`
    return {"depth": depth, "mean": round(sum(scores) / len(scores), 4)}


def search(ctx: TaskContext, depths: list[int]) -> dict:
    tried = ctx.map(try_depth, depths)  # one child per depth; they wait for theirs
    best = max(tried, key=lambda t: t["mean"])
    ctx.logger.info("tried %d depths, best %s", len(tried), best)
    return {"best": best, "tried": len(tried)}


register_task_pipeline(
    flow_name="tune",
    pipeline={"search": {"function": search}},
)
