"""The original Django Flow Forge example flows, re-expressed for FlowForge.

Tasks pass data as small JSON outputs: a task takes an upstream task's output by naming a
parameter after it. Run one with:

    flowforge dev examples/seed_pipelines.py --run pipeline_simple --headless
"""

import random
import statistics
import time

from flowforge import TaskContext, register_task_pipeline


def _rows(n_rows: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.gauss(50, 15), 2) for _ in range(n_rows)]


def fetch_data1(n_rows: int = 200) -> dict:
    """Fetch the first source (simulated: reproducible random numbers)."""
    time.sleep(0.05)
    return {"source": "source1", "rows": _rows(n_rows, 1)}


def fetch_data2(n_rows: int = 200) -> dict:
    """Fetch the second source (simulated)."""
    time.sleep(0.05)
    return {"source": "source2", "rows": _rows(n_rows, 2)}


def clean_data(fetch_data1: dict, fetch_data2: dict) -> dict:
    """Merge both sources and drop outliers beyond three standard deviations."""
    rows = fetch_data1["rows"] + fetch_data2["rows"]
    mean, sd = statistics.fmean(rows), statistics.pstdev(rows)
    kept = [r for r in rows if abs(r - mean) <= 3 * sd]
    return {"rows": kept, "dropped": len(rows) - len(kept)}


def analyze_data(clean_data: dict, ctx: TaskContext) -> dict:
    """Summary statistics of the cleaned rows."""
    rows = clean_data["rows"]
    ctx.checkpoint(f"analysing {len(rows)} rows")
    return {
        "count": len(rows),
        "mean": round(statistics.fmean(rows), 3),
        "stdev": round(statistics.pstdev(rows), 3),
        "min": min(rows),
        "max": max(rows),
    }


def some_post_process_function(analyze_data: dict, clean_data: dict) -> dict:
    """Combine the analysis with what cleaning dropped into a short report."""
    return {"report": f"{analyze_data['count']} rows, mean {analyze_data['mean']}, "
                      f"{clean_data['dropped']} outliers dropped"}


def faulty_transform(clean_data: dict) -> dict:
    """A step with a bug: it names a variable that does not exist."""
    return {"value": undefined_variable}  # type: ignore[name-defined]  # noqa: F821


def publish_results(faulty_transform: dict) -> dict:
    """Never runs in pipeline_simple_with_failure: its upstream fails."""
    return {"published": True}


def independent_summary(fetch_data2: dict) -> dict:
    """An independent branch that still succeeds when another branch fails."""
    return {"n": len(fetch_data2["rows"])}


def train_model(analyze_data: dict, ctx: TaskContext, epochs: int = 20,
                learning_rate: float = 0.05) -> dict:
    """Fit y = a*x + b by gradient descent on synthetic data (pure Python, runs anywhere),
    logging the training loss (mean squared error) each epoch and, at the end, the held-out
    loss and R² as the run's experiment record: ``flowforge experiments pipeline_simple_ml``
    and the dashboard's Experiments view (e) compare runs of several learning rates."""
    rng = random.Random(7)
    xs = [i / 10 for i in range(100)]
    ys = [analyze_data["mean"] / 50 * x + 1.0 + rng.gauss(0, 0.1) for x in xs]
    train = list(zip(xs[::2], ys[::2], strict=True))
    held_out = list(zip(xs[1::2], ys[1::2], strict=True))
    a = b = 0.0
    for epoch in range(epochs):
        grad_a = sum((a * x + b - y) * x for x, y in train) / len(train)
        grad_b = sum((a * x + b - y) for x, y in train) / len(train)
        a, b = a - learning_rate * grad_a, b - learning_rate * grad_b
        ctx.log_metric("loss", _mse(a, b, train))
        ctx.progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}")
    mse = _mse(a, b, held_out)
    mean_y = statistics.fmean(y for _, y in held_out)
    r2 = 1 - mse / statistics.fmean((y - mean_y) ** 2 for _, y in held_out)
    metrics = {"val.loss": round(mse, 5), "r2": round(r2, 4)}
    ctx.log_result(algorithm="linear_regression_gd", metrics=metrics,
                   params={"learning_rate": learning_rate, "epochs": epochs},
                   metadata={"a": round(a, 4), "b": round(b, 4)})
    return {"algorithm": "linear_regression_gd", "a": round(a, 4), "b": round(b, 4),
            "mse": round(mse, 5), "epochs": epochs}


def _mse(a: float, b: float, points: list[tuple[float, float]]) -> float:
    """Mean squared error of y = a*x + b; a diverging fit is capped (a metric is finite)."""
    error = sum(min((a * x + b - y) ** 2, 1e12) for x, y in points) / len(points)
    return round(error, 6)


register_task_pipeline(
    flow_name="pipeline_simple",
    clear_existing_flow_in_db=True,
    pipeline={
        "fetch_data1": {"function": fetch_data1, "depends_on": []},
        "fetch_data2": {"function": fetch_data2, "depends_on": []},
        "clean_data": {"function": clean_data, "depends_on": ["fetch_data1", "fetch_data2"]},
        "analyze_data": {"function": analyze_data, "depends_on": ["clean_data"]},
        "some_post_process_function": {
            "function": some_post_process_function,
            "depends_on": ["analyze_data", "clean_data"],
            "nested": True,
        },
    },
)

register_task_pipeline(
    flow_name="pipeline_simple_with_failure",
    clear_existing_flow_in_db=True,
    pipeline={
        "fetch_data1": {"function": fetch_data1, "depends_on": []},
        "fetch_data2": {"function": fetch_data2, "depends_on": []},
        "clean_data": {"function": clean_data, "depends_on": ["fetch_data1", "fetch_data2"]},
        "faulty_transform": {"function": faulty_transform, "depends_on": ["clean_data"]},
        "publish_results": {"function": publish_results, "depends_on": ["faulty_transform"]},
        "independent_summary": {"function": independent_summary, "depends_on": ["fetch_data2"]},
    },
)

register_task_pipeline(
    flow_name="parallel_pipelines",
    clear_existing_flow_in_db=True,
    pipeline={
        "fetch_data1": {"function": fetch_data1, "depends_on": []},
        "fetch_data2": {"function": fetch_data2, "depends_on": []},
        "clean_data": {"function": clean_data, "depends_on": ["fetch_data1", "fetch_data2"],
                       "verbose_name": "Merge and clean"},
        "analyze_data": {"function": analyze_data, "depends_on": ["clean_data"]},
    },
)

register_task_pipeline(
    flow_name="pipeline_simple_ml",
    clear_existing_flow_in_db=True,
    pipeline={
        "fetch_data1": {"function": fetch_data1, "depends_on": []},
        "fetch_data2": {"function": fetch_data2, "depends_on": []},
        "clean_data": {"function": clean_data, "depends_on": ["fetch_data1", "fetch_data2"]},
        "analyze_data": {"function": analyze_data, "depends_on": ["clean_data"]},
        "train_model": {"function": train_model, "depends_on": ["analyze_data"], "queue": "gpu",
                        "verbose_name": "Train the model"},
    },
)
