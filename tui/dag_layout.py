"""Layered DAG layout: tasks in columns left to right, boxes, connectors and group frames as text rows.

The layout is pure and independent of task states: it is computed once per flow version and
each visible row is drawn on demand (``row(y)``), so a flow of thousands of tasks lays out in
a fraction of a second and scrolls cheaply. Colour comes from the caller, per owner of a span.

Each dependency ends in its own arrow (a box has one entry row per dependency) and the lines
of different tasks only ever cross (``┼``), never join: every path on screen reads one way
(tui/dag_route.py routes them; the tests trace them on the canvas).
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from protocol.flows import FlowSpec
from tui.dag_graph import Graph, Node
from tui.dag_route import Route, Source, route

UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
# Box-drawing character for each combination of the four line directions in a cell.
LINE_CHARS = " │││─┘┐┤─└┌├─┴┬┼"
ARROW = "▶"
MAX_LABEL = 24
BLOCK = 32
"""Rows per bucket of vertical lines: a row is drawn from its bucket, not from every line."""

Role = Literal["edge", "box", "group", "arrow"]
Glyph = Callable[[str], str]
"""A task's one-character mark (its state)."""
Progress = Callable[[str], float | None]
"""How far a task is (0 to 1), or None to draw a plain box."""
Caption = Callable[[str, int], str]
"""A mapped task's second line (its instances' counts), at most the given width."""
Badge = Callable[[str, int], str]
"""What a box's top edge says of its task, if anything (its children's counts), at most the
given width: a task's children are only known at run time, so they get no room of their own."""
MAPPED_WIDTH = 24
"""A mapped task's box is at least this wide (at the default zoom): room for its caption."""
Direction = Literal["up", "down", "left", "right"]


@dataclass(frozen=True, slots=True)
class Box:
    """Where a task's box is on the canvas (three rows high, or more: see ``_box_height``)."""

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
    return [Node(t.name, t.depends_on, t.group, t.name, t.map_over is not None) for t in spec.tasks]


class DagLayout:
    """A laid-out DAG: geometry, per-row drawing primitives, and navigation between boxes."""

    def __init__(self, nodes: Sequence[Node], max_label: int = MAX_LABEL) -> None:
        self.max_label = max_label
        self.members: dict[str, tuple[str, ...]] = {}
        """The tasks behind each collapsed group's box (set by whoever collapsed them)."""
        graph = Graph(nodes)
        self._graph = graph
        self.labels = {n.name: _cut(n.label or n.name, max_label) for n in nodes}
        self.mapped = {n.name for n in nodes if n.mapped}
        wide = min(MAPPED_WIDTH, max_label + 12)
        self.box_w = {n.name: max(len(self.labels[n.name]) + 6, wide if n.mapped else 0)
                      for n in nodes}
        """Each box's width: its label's, or a mapped task's caption's."""
        self.boxes: dict[str, Box] = {}
        self.order: list[list[str]] = []
        self._hsegs: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self._vcells: dict[int, list[tuple[int, int]]] = defaultdict(list)
        """Ends of vertical lines, by row."""
        self._vspans: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        """Vertical lines (column, first row, last row) by block of BLOCK rows they pass."""
        self._arrows: dict[int, list[int]] = defaultdict(list)
        self._box_rows: dict[int, list[tuple[Box, int]]] = defaultdict(list)
        self._frame_rows: dict[int, list[tuple[_Frame, int]]] = defaultdict(list)
        self._place(graph, graph.order())
        self._index()

    # -- geometry ----------------------------------------------------------------------

    def _place(self, graph: Graph, layers: list[list[int]]) -> None:
        widths = [max((self.box_w[graph.nodes[i].name] for i in items if i < graph.n),
                      default=0) + 2 for items in layers]
        heights = [_box_height(len(graph.pred[i]), graph.nodes[i].mapped) if i < graph.n else 1
                   for i in range(len(graph.layer))]
        ys, layer_heights, frames = _stack(graph, layers, heights)
        height = max(layer_heights, default=0)
        for lay, items in enumerate(layers):
            shift = (height - layer_heights[lay]) // 2  # centre each layer: a chain draws straight
            shift -= shift % 2  # keep exit and entry rows odd
            for item in items:
                ys[item] += shift
            frames[lay] = [_Frame(f.group, 0, 0, f.top + shift, f.bottom + shift)
                           for f in frames[lay]]
        self.height = height
        entries = self._entries(graph, layers, ys)
        col_x: list[int] = []
        x = 0
        for lay, items in enumerate(layers):
            col_x.append(x)
            x += widths[lay]
            if lay + 1 < len(layers):
                sources = [Source(_exit_row(graph, i, ys), self._line_start(graph, i, col_x[lay], x),
                                  [entries[(i, d)] for d in graph.succ[i]])
                           for i in items if graph.succ[i]]
                channel = route(sources, x, height)
                self._add_lines(channel)
                x += channel.width
        self.width = x
        self._finish(graph, layers, ys, heights, widths, col_x, frames)

    def _entries(self, graph: Graph, layers: list[list[int]], ys: list[int]
                 ) -> dict[tuple[int, int], int]:
        """The row where each edge enters its target: a row of its own, in the order of the
        sources' rows (so edges into one target do not cross each other)."""
        out: dict[tuple[int, int], int] = {}
        for items in layers:
            for item in items:
                preds = sorted(graph.pred[item], key=lambda p: (_exit_row(graph, p, ys), p))
                for k, p in enumerate(preds):
                    out[(p, item)] = ys[item] + 1 + 2 * k if item < graph.n else ys[item]
        return out

    def _line_start(self, graph: Graph, item: int, col: int, channel: int) -> int:
        """Where an item's outgoing line starts: right of its box, or the channel for a dummy."""
        return col + 1 + self.box_w[graph.nodes[item].name] if item < graph.n else channel

    def _add_lines(self, channel: Route) -> None:
        for y, x0, x1 in channel.hsegs:
            self._hsegs[y].append((x0, x1))
        for x, y0, y1 in channel.vsegs:
            self._vcells[y0].append((x, DOWN))
            self._vcells[y1].append((x, UP))
            for block in range((y0 + 1) // BLOCK, (y1 - 1) // BLOCK + 1):
                self._vspans[block].append((x, y0, y1))

    def _finish(self, graph: Graph, layers: list[list[int]], ys: list[int], heights: list[int],
                widths: list[int], col_x: list[int], frames: list[list[_Frame]]) -> None:
        for lay, items in enumerate(layers):
            names = []
            for item in items:
                if item < graph.n:
                    name = graph.nodes[item].name
                    box = Box(name, col_x[lay] + 1, ys[item], self.box_w[name], lay, heights[item])
                    self.boxes[name] = box
                    names.append(name)
                    for part in range(box.h):
                        self._box_rows[box.y + part].append((box, part))
                    for k in range(len(graph.pred[item])):
                        self._arrows[box.y + 1 + 2 * k].append(col_x[lay])
                else:
                    self._hsegs[ys[item]].append((col_x[lay], col_x[lay] + widths[lay] - 1))
            self.order.append(names)
            for f in frames[lay]:
                frame = _Frame(f.group, col_x[lay], widths[lay], f.top, f.bottom)
                for y in range(frame.top, frame.bottom + 1):
                    self._frame_rows[y].append((frame, y - frame.top))

    def _index(self) -> None:
        self.position = {name: (lay, k) for lay, names in enumerate(self.order)
                         for k, name in enumerate(names)}

    # -- drawing -----------------------------------------------------------------------

    def row(self, y: int, glyph: Glyph | None = None, progress: Progress | None = None,
            caption: Caption | None = None, badge: Badge | None = None) -> list[Span]:
        """Row ``y`` as spans; ``glyph(name)`` gives the one-character mark inside each box,
        ``progress(name)`` a fraction done (or None), drawn as a bar in the box's bottom edge,
        ``caption(name, width)`` a mapped task's second line and ``badge(name, width)`` what
        its top edge says (if anything)."""
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
        for x, y0, y1 in self._vspans.get(y // BLOCK, ()):
            if y0 < y < y1:
                mask[x] |= UP | DOWN
        chars = [LINE_CHARS[m] for m in mask]
        owners: list[tuple[str | None, Role]] = [(None, "edge")]
        own = [0] * width
        arrows = set(self._arrows.get(y, ()))
        for frame, part in self._frame_rows.get(y, ()):
            self._draw_frame(frame, part, chars, own, owners, mask, arrows)
        for box, part in self._box_rows.get(y, ()):
            text = (_top_edge(box, badge) if part == 0 else
                    self._box_text(box, part, glyph, progress, caption))
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

    def _box_text(self, box: Box, part: int, glyph: Glyph | None,
                  progress: Progress | None, caption: Caption | None) -> list[str]:
        inner = box.w - 2
        if part == box.h - 1:
            done = progress(box.name) if progress else None
            return ["╰", *(progress_edge(done, inner) if done is not None else "─" * inner), "╯"]
        if part == 2 and caption is not None and box.name in self.mapped:
            return list(f"│ {_cut(caption(box.name, inner - 2), inner - 2).ljust(inner - 2)} │")
        if part > 1:
            return ["│", *(" " * inner), "│"]
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

    def text(self, glyph: Glyph | None = None, progress: Progress | None = None,
             caption: Caption | None = None, badge: Badge | None = None) -> str:
        """The whole canvas as plain text (for small graphs, logs and tests)."""
        return "\n".join("".join(s.text for s in self.row(y, glyph, progress, caption, badge))
                         .rstrip() for y in range(self.height))

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




def _top_edge(box: Box, badge: Badge | None) -> list[str]:
    """``╭─ 9/12 ✓8 ✗1 ▶3 ───╮``: a box's top edge, with its badge when it has one that fits."""
    room = box.w - 5
    mark = badge(box.name, room) if badge is not None and room >= 3 else ""
    if not mark:
        return ["╭", *("─" * (box.w - 2)), "╮"]
    mark = _cut(mark, room)
    return ["╭", "─", *f" {mark} ", *("─" * (room - len(mark))), "╮"]


def progress_edge(fraction: float, width: int) -> str:
    """A box's bottom edge as a bar: heavy for the part done, the percentage in the middle."""
    fraction = max(0.0, min(1.0, fraction))
    done = round(fraction * width)
    bar = "━" * done + "─" * (width - done)
    label = f" {fraction:.0%} "
    if len(label) > width:
        return bar
    at = (width - len(label)) // 2
    return bar[:at] + label + bar[at + len(label):]

def _box_height(entries: int, mapped: bool = False) -> int:
    """Three rows (four for a mapped task: its caption), or one entry row per dependency with a
    row between them."""
    return max(4 if mapped else 3, 2 * entries + 1)


def _exit_row(graph: Graph, item: int, ys: list[int]) -> int:
    return ys[item] + 1 if item < graph.n else ys[item]


def _stack(graph: Graph, layers: list[list[int]], heights: list[int]
           ) -> tuple[list[int], list[int], list[list[_Frame]]]:
    """Rows of every item per layer from the top, group members framed together; each layer's
    height. Exit and entry rows are odd (box tops even, dummies on odd rows), so even rows are
    free in every channel."""
    ys = [0] * len(graph.layer)
    layer_heights: list[int] = []
    frames: list[list[_Frame]] = []
    for items in layers:
        y, bottom, framed = 0, 0, []
        k = 0
        while k < len(items):
            item = items[k]
            g = graph.group(item)
            if g is None:
                ys[item] = y + (y % 2 if item < graph.n else 1 - y % 2)
                y = ys[item] + heights[item] + (item < graph.n)
                bottom = max(bottom, ys[item] + heights[item])
                k += 1
                continue
            y += 1 + (y + 1) % 2  # the frame's top row, then an even row for the first box
            top = y - 1
            while k < len(items) and graph.group(items[k]) == g:
                ys[items[k]] = y
                y += heights[items[k]] + 1
                k += 1
            framed.append(_Frame(g, 0, 0, top, y - 1))
            bottom = max(bottom, y)
            y += 1
        layer_heights.append(bottom)
        frames.append(framed)
    return ys, layer_heights, frames

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
