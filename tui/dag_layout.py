"""Layered DAG layout: tasks in columns left to right, boxes, connectors and group frames as text rows.

The layout is pure and independent of task states: it is computed once per flow version and
each visible row is drawn on demand (``row(y)``), so a flow of thousands of tasks lays out in
a fraction of a second and scrolls cheaply. Colour comes from the caller, per owner of a span.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Literal

from protocol.flows import FlowSpec
from tui.dag_graph import Graph

UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
# Box-drawing character for each combination of the four line directions in a cell.
LINE_CHARS = " │││─┘┐┤─└┌├─┴┬┼"
ARROW = "▶"
MAX_LABEL = 24

_Bus = tuple[int | None, int, int, list[int]]
"""(track or None for a straight line, source item, source row, target rows)."""
Role = Literal["edge", "box", "group", "arrow"]
Direction = Literal["up", "down", "left", "right"]


@dataclass(frozen=True, slots=True)
class Node:
    """A task to draw: its name, what it waits for, its group (if nested) and its label."""

    name: str
    deps: tuple[str, ...] = ()
    group: str | None = None
    label: str = ""


@dataclass(frozen=True, slots=True)
class Box:
    """Where a task's box is on the canvas (three rows high)."""

    name: str
    x: int
    y: int
    w: int
    layer: int
    h: int = 3


@dataclass(frozen=True, slots=True)
class Span:
    """A run of cells of one row drawn for one owner: a task (box), a group (frame) or an edge."""

    text: str
    owner: str | None
    role: Role


@dataclass(frozen=True, slots=True)
class _Frame:
    group: str
    x: int
    w: int
    top: int
    bottom: int


def nodes_of(spec: FlowSpec) -> list[Node]:
    return [Node(t.name, t.depends_on, t.group, t.name) for t in spec.tasks]


class DagLayout:
    """A laid-out DAG: geometry, per-row drawing primitives, and navigation between boxes."""

    def __init__(self, nodes: Sequence[Node], max_label: int = MAX_LABEL) -> None:
        self.max_label = max_label
        graph = Graph(nodes)
        self._graph = graph
        self.labels = {n.name: _cut(n.label or n.name, max_label) for n in nodes}
        self.boxes: dict[str, Box] = {}
        self.order: list[list[str]] = []
        self._hsegs: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self._vcells: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self._arrows: dict[int, list[int]] = defaultdict(list)
        self._box_rows: dict[int, list[tuple[Box, int]]] = defaultdict(list)
        self._frame_rows: dict[int, list[tuple[_Frame, int]]] = defaultdict(list)
        self._place(graph, graph.order())
        self._index()

    # -- geometry ----------------------------------------------------------------------

    def _place(self, graph: Graph, layers: list[list[int]]) -> None:
        widths = [max((len(self.labels[graph.nodes[i].name]) + 6 for i in items if i < graph.n),
                      default=0) + 2 for items in layers]
        ys, heights, frames = self._stack(graph, layers)
        height = max(heights, default=0)
        for lay, items in enumerate(layers):
            shift = (height - heights[lay]) // 2  # centre each layer: a chain draws straight
            for item in items:
                ys[item] += shift
            frames[lay] = [_Frame(f.group, 0, 0, f.top + shift, f.bottom + shift)
                           for f in frames[lay]]
        self._frames = frames
        self._pending_channels: list[tuple[int, list[_Bus], int]] = []
        self.height = height
        x = 0
        col_x: list[int] = []
        for lay, items in enumerate(layers):
            col_x.append(x)
            x += widths[lay]
            if lay + 1 < len(layers):
                x += self._channel(graph, items, ys, x, lay)
        self.width = x
        self._finish(graph, layers, ys, widths, col_x)

    def _stack(self, graph: Graph, layers: list[list[int]]
               ) -> tuple[list[int], list[int], list[list[_Frame]]]:
        """Rows of every item, top-aligned per layer; group members framed together."""
        ys = [0] * len(graph.layer)
        heights: list[int] = []
        frames: list[list[_Frame]] = []
        for items in layers:
            y, framed = 0, []
            k = 0
            while k < len(items):
                g = graph.group(items[k])
                if g is None:
                    ys[items[k]] = y
                    y += 4 if items[k] < graph.n else 1
                    k += 1
                    continue
                top = y
                y += 1
                while k < len(items) and graph.group(items[k]) == g:
                    ys[items[k]] = y
                    y += 4
                    k += 1
                framed.append(_Frame(g, 0, 0, top, y - 1))
                y += 1
            heights.append(max(y - 1, 0))
            frames.append(framed)
        return ys, heights, frames

    def _channel(self, graph: Graph, items: list[int], ys: list[int], xs: int, lay: int) -> int:
        """Connectors between layer ``lay`` and the next, starting at column ``xs``; returns width."""
        buses = []
        for src in items:
            if not graph.succ[src]:
                continue
            ysrc = self._port_y(graph, src, ys)
            ydst = [self._port_y(graph, d, ys) for d in graph.succ[src]]
            buses.append((min(ysrc, *ydst), max(ysrc, *ydst), src, ysrc, ydst))
        buses.sort()
        ends: list[tuple[int, int]] = []  # (last row used, track) of busy tracks
        free: list[int] = []
        tracks = 0
        plan: list[_Bus] = []
        for lo, hi, src, ysrc, ydst in buses:
            if lo == hi:
                plan.append((None, src, ysrc, ydst))
                continue
            while ends and ends[0][0] < lo:
                heappush(free, heappop(ends)[1])
            track = heappop(free) if free else tracks
            tracks = max(tracks, track + 1)
            heappush(ends, (hi, track))
            plan.append((track, src, ysrc, ydst))
        self._pending_channels.append((xs, plan, lay))
        return tracks + 2 if tracks else 3

    @staticmethod
    def _port_y(graph: Graph, item: int, ys: list[int]) -> int:
        return ys[item] + 1 if item < graph.n else ys[item]

    def _finish(self, graph: Graph, layers: list[list[int]], ys: list[int],
                widths: list[int], col_x: list[int]) -> None:
        for lay, items in enumerate(layers):
            names = []
            for item in items:
                if item < graph.n:
                    name = graph.nodes[item].name
                    box = Box(name, col_x[lay] + 1, ys[item], len(self.labels[name]) + 6, lay)
                    self.boxes[name] = box
                    names.append(name)
                    for part in range(3):
                        self._box_rows[box.y + part].append((box, part))
                else:
                    self._hsegs[ys[item]].append((col_x[lay], col_x[lay] + widths[lay] - 1))
            self.order.append(names)
            for f in self._frames[lay]:
                frame = _Frame(f.group, col_x[lay], widths[lay], f.top, f.bottom)
                for y in range(frame.top, frame.bottom + 1):
                    self._frame_rows[y].append((frame, y - frame.top))
        for xs, plan, lay in self._pending_channels:
            self._draw_channel(graph, xs, plan, col_x[lay + 1])

    def _draw_channel(self, graph: Graph, xs: int, plan: list[_Bus], x_next: int) -> None:
        for track, src, ysrc, ydst in plan:
            x0 = self.boxes[graph.nodes[src].name].x + self.boxes[graph.nodes[src].name].w \
                if src < graph.n else xs
            dsts = graph.succ[src]
            if track is None:
                self._hsegs[ysrc].append((x0, x_next))
            else:
                xt = xs + 1 + track
                self._hsegs[ysrc].append((x0, xt))
                lo, hi = min(ysrc, *ydst), max(ysrc, *ydst)
                self._vcells[lo].append((xt, DOWN))
                self._vcells[hi].append((xt, UP))
                for y in range(lo + 1, hi):
                    self._vcells[y].append((xt, UP | DOWN))
                for y in ydst:
                    self._hsegs[y].append((xt, x_next))
            for d, y in zip(dsts, ydst, strict=True):
                if d < graph.n:
                    self._arrows[y].append(x_next)

    def _index(self) -> None:
        self.position = {name: (lay, k) for lay, names in enumerate(self.order)
                         for k, name in enumerate(names)}

    # -- drawing -----------------------------------------------------------------------

    def row(self, y: int, glyph: Callable[[str], str] | None = None) -> list[Span]:
        """Row ``y`` as spans; ``glyph(name)`` gives the one-character mark inside each box."""
        width = self.width
        mask = bytearray(width)
        for x0, x1 in self._hsegs.get(y, ()):
            x1 = min(x1, width - 1)
            if x1 <= x0:
                continue
            mask[x0] |= RIGHT
            mask[x1] |= LEFT
            for x in range(x0 + 1, x1):
                mask[x] |= LEFT | RIGHT
        for x, bits in self._vcells.get(y, ()):
            mask[x] |= bits
        chars = [LINE_CHARS[m] for m in mask]
        owners: list[tuple[str | None, Role]] = [(None, "edge")]
        own = [0] * width
        arrows = set(self._arrows.get(y, ()))
        for frame, part in self._frame_rows.get(y, ()):
            self._draw_frame(frame, part, chars, own, owners, mask, arrows)
        for box, part in self._box_rows.get(y, ()):
            text = self._box_text(box, part, glyph)
            chars[box.x:box.x + box.w] = text
            owners.append((box.name, "box"))
            own[box.x:box.x + box.w] = [len(owners) - 1] * box.w
        if arrows:
            owners.append((None, "arrow"))
            for x in arrows:
                if x < width:
                    chars[x] = ARROW
                    own[x] = len(owners) - 1
        return _spans(chars, own, owners)

    def _box_text(self, box: Box, part: int, glyph: Callable[[str], str] | None) -> list[str]:
        inner = box.w - 2
        if part == 0:
            return ["╭", *("─" * inner), "╮"]
        if part == 2:
            return ["╰", *("─" * inner), "╯"]
        mark = glyph(box.name)[:1] if glyph else "·"
        return list(f"│ {mark} {self.labels[box.name].ljust(inner - 4)} │")

    @staticmethod
    def _draw_frame(frame: _Frame, part: int, chars: list[str], own: list[int],
                    owners: list[tuple[str | None, Role]], mask: bytearray, arrows: set[int]) -> None:
        owners.append((frame.group, "group"))
        k = len(owners) - 1
        right = frame.x + frame.w - 1
        if part == 0 or frame.top + part == frame.bottom:
            label = f" {frame.group} " if part == 0 else ""
            label = _cut(label, max(frame.w - 3, 0))
            fill = "┄" * (frame.w - 2 - len(label))
            corner = ("┌", "┐") if part == 0 else ("└", "┘")
            chars[frame.x:right + 1] = [corner[0], *label, *fill, corner[1]]
            own[frame.x:right + 1] = [k] * frame.w
            return
        if frame.x not in arrows:
            chars[frame.x], own[frame.x] = "┆", k
        if not mask[right]:
            chars[right], own[right] = "┆", k

    def text(self, glyph: Callable[[str], str] | None = None) -> str:
        """The whole canvas as plain text (for small graphs, logs and tests)."""
        return "\n".join("".join(s.text for s in self.row(y, glyph)).rstrip()
                         for y in range(self.height))

    # -- navigation --------------------------------------------------------------------

    def at(self, x: int, y: int) -> str | None:
        """The task whose box covers the cell, if any."""
        for box, _part in self._box_rows.get(y, ()):
            if box.x <= x < box.x + box.w:
                return box.name
        return None

    def first(self) -> str | None:
        return next((names[0] for names in self.order if names), None)

    def neighbour(self, name: str, direction: Direction) -> str | None:
        """The box above, below, or the nearest one in the next non-empty layer left or right."""
        lay, k = self.position[name]
        if direction in ("up", "down"):
            k2 = k - 1 if direction == "up" else k + 1
            names = self.order[lay]
            return names[k2] if 0 <= k2 < len(names) else None
        step = -1 if direction == "left" else 1
        lay2 = lay + step
        while 0 <= lay2 < len(self.order) and not self.order[lay2]:
            lay2 += step
        if not 0 <= lay2 < len(self.order):
            return None
        y = self.boxes[name].y
        return min(self.order[lay2], key=lambda n: abs(self.boxes[n].y - y))


def _spans(chars: list[str], own: list[int], owners: list[tuple[str | None, Role]]) -> list[Span]:
    out: list[Span] = []
    start = 0
    for x in range(1, len(chars) + 1):
        if x == len(chars) or own[x] != own[start]:
            owner, role = owners[own[start]]
            out.append(Span("".join(chars[start:x]), owner, role))
            start = x
    return out


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def layout(nodes: Iterable[Node], max_label: int = MAX_LABEL) -> DagLayout:
    """Lay out tasks (any order; dependencies on unknown names are ignored)."""
    return DagLayout(list(nodes), max_label)


def layout_spec(spec: FlowSpec, max_label: int = MAX_LABEL) -> DagLayout:
    return layout(nodes_of(spec), max_label)
