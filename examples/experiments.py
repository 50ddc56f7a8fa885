"""Metrics from inside a task, compared across runs: a hand-made logistic regression on
generated data, trained with a few learning rates (pure Python, runs anywhere).

    flowforge register examples/experiments.py
    flowforge run fit_classifier --param learning_rate=0.3 --wait
    flowforge experiments fit_classifier --sort -accuracy
"""

import math
import random

from flowforge import TaskContext, register_task_pipeline


def make_data(n_rows: int = 400, seed: int = 1) -> dict:
    """Points in the plane, labelled by which side of a line they fall (a tenth flipped)."""
    rng = random.Random(seed)
    xs = [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in range(n_rows)]
    ys = [int((0.8 * a - 0.5 * b + 0.1 > 0) != (rng.random() < 0.1)) for a, b in xs]
    return {"xs": xs, "ys": ys}


def fit(make_data: dict, ctx: TaskContext, learning_rate: float = 0.1, epochs: int = 30) -> dict:
    """Gradient descent on the log loss; logs the loss and accuracy of every epoch, then the
    model as a result."""
    xs, ys = make_data["xs"], make_data["ys"]
    w = [0.0, 0.0, 0.0]

    def p(a: float, b: float) -> float:
        return 1 / (1 + math.exp(-(w[0] * a + w[1] * b + w[2])))

    for _ in range(epochs):
        grads = [0.0, 0.0, 0.0]
        for (a, b), y in zip(xs, ys, strict=True):
            err = p(a, b) - y
            grads = [grads[0] + err * a, grads[1] + err * b, grads[2] + err]
        w = [wi - learning_rate * g / len(xs) for wi, g in zip(w, grads, strict=True)]
        loss = -sum(math.log(max(1e-12, p(a, b) if y else 1 - p(a, b)))
                    for (a, b), y in zip(xs, ys, strict=True)) / len(xs)
        accuracy = sum((p(a, b) > 0.5) == bool(y) for (a, b), y in zip(xs, ys, strict=True))
        ctx.log_metrics({"loss": loss, "accuracy": accuracy / len(xs)})
    ctx.log_result(algorithm="logistic_regression_gd",
                   params={"learning_rate": learning_rate, "epochs": epochs},
                   metrics={"accuracy": accuracy / len(xs)}, metadata={"weights": w})
    return {"weights": [round(x, 4) for x in w]}


register_task_pipeline(flow_name="fit_classifier", pipeline={
    "make_data": {"function": make_data},
    "fit": {"function": fit, "depends_on": ["make_data"]},
})
