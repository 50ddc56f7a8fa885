"""Times the DAG layout on a random flow: ``python -m bench.tui_layout [--tasks 1000]``."""

import argparse
import random
import time

from tui.dag_graph import Node
from tui.dag_layout import layout


def random_nodes(n: int, seed: int = 1234, max_deps: int = 3) -> list[Node]:
    """A random DAG like the tests' ``random_dag``: each task waits for up to 3 earlier ones."""
    rng = random.Random(seed)
    names: list[str] = []
    nodes = []
    for i in range(n):
        name = f"t{i:04d}"
        deps = tuple(rng.sample(names, rng.randint(0, min(max_deps, len(names)))))
        group = f"g{i % 7}" if i % 5 == 0 else None
        nodes.append(Node(name, deps, group, name))
        names.append(name)
    return nodes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rows", type=int, default=60, help="rows drawn, like one screen")
    ns = p.parse_args(argv)
    nodes = random_nodes(ns.tasks)
    best = best_rows = float("inf")
    for _ in range(ns.repeat):
        t0 = time.perf_counter()
        dag = layout(nodes)
        t1 = time.perf_counter()
        for y in range(min(ns.rows, dag.height)):
            dag.row(dag.height // 2 + y - ns.rows // 2)
        t2 = time.perf_counter()
        best, best_rows = min(best, t1 - t0), min(best_rows, t2 - t1)
    print(f"{ns.tasks} tasks: layout {best * 1000:.0f} ms (best of {ns.repeat}), canvas "
          f"{dag.width}x{dag.height}; drawing {ns.rows} rows {best_rows * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
