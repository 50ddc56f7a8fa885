"""The tasks of a DAG to draw, its layers and an order within each that keeps crossings few
(pure; used by dag_layout)."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.dag import layers_of

SWEEPS = 4


@dataclass(frozen=True, slots=True)
class Node:
    """A task to draw: its name, what it waits for, its group (if nested), its label and
    whether it is mapped."""

    name: str
    deps: tuple[str, ...] = ()
    group: str | None = None
    label: str = ""
    mapped: bool = False
    """A mapped task: its box is drawn taller and wider, with a caption (its instances' counts)."""


class Graph:
    """Nodes plus dummy items that carry long edges through the layers in between."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = nodes
        self.n = len(nodes)
        layer_of = layers_of({n.name: n.deps for n in nodes})
        self.layer = [layer_of[n.name] for n in nodes]
        """Each item's column: a task's longest distance from a root (a dummy's is set as made)."""
        self.succ: list[list[int]] = [[] for _ in nodes]
        self.pred: list[list[int]] = [[] for _ in nodes]
        index = {n.name: i for i, n in enumerate(nodes)}
        targets: dict[int, list[int]] = defaultdict(list)
        for i, node in enumerate(nodes):
            for d in dict.fromkeys(node.deps):
                if d in index:
                    targets[index[d]].append(i)
        for src, dsts in targets.items():
            self._connect(src, dsts)

    def _item(self, layer: int) -> int:
        self.layer.append(layer)
        self.succ.append([])
        self.pred.append([])
        return len(self.layer) - 1

    def _link(self, a: int, b: int) -> None:
        self.succ[a].append(b)
        self.pred[b].append(a)

    def _connect(self, src: int, dsts: list[int]) -> None:
        """One chain of dummies per source, shared by all its long edges (a bundled bus)."""
        carrier = {self.layer[src]: src}
        last = max(self.layer[d] for d in dsts) - 1
        for lay in range(self.layer[src] + 1, last + 1):
            carrier[lay] = self._item(lay)
            self._link(carrier[lay - 1], carrier[lay])
        for d in dsts:
            self._link(carrier[self.layer[d] - 1], d)

    def group(self, item: int) -> str | None:
        return self.nodes[item].group if item < self.n else None

    def order(self) -> list[list[int]]:
        """Items per layer, ordered by barycentre sweeps to reduce crossings; groups kept together."""
        depth = max(self.layer, default=-1) + 1
        layers: list[list[int]] = [[] for _ in range(depth)]
        for item, lay in enumerate(self.layer):
            layers[lay].append(item)
        pos = [0] * len(self.layer)
        for items in layers:
            for k, item in enumerate(items):
                pos[item] = k
        for sweep in range(SWEEPS):
            down = sweep % 2 == 0
            seq = range(1, depth) if down else range(depth - 2, -1, -1)
            for lay in seq:
                near = self.pred if down else self.succ
                items = layers[lay]
                items.sort(key=lambda i: sum(pos[j] for j in near[i]) / len(near[i])
                           if near[i] else pos[i])
                layers[lay] = self._cluster(items)
                for k, item in enumerate(layers[lay]):
                    pos[item] = k
        return layers

    def _cluster(self, items: list[int]) -> list[int]:
        first: dict[str, int] = {}
        keys: dict[int, tuple[int, int]] = {}
        for k, item in enumerate(items):
            g = self.group(item)
            if g is not None:
                first.setdefault(g, k)
            keys[item] = (first[g] if g is not None else k, k)
        return sorted(items, key=keys.__getitem__)
