"""Routes the connectors between two layers so that no two sources ever share a line (pure).

Every dependency ends in its own arrow (a target has one entry row per dependency), so a
line is never the meeting point of two sources and any path on screen reads one way: the
lines of different sources only cross, drawn ``┼``, and a ``┼`` is never a junction.

Each source gets one vertical bus in the channel (two, up and down, when it also runs
straight into a target on its own row, so its junctions stay ``┬``/``┴``). Entry and exit
rows are odd, so even rows carry no entry or exit lines: when the bus of a source must end
left of a line that enters a target on that source's own row, and those constraints form a
cycle (edges that cross each other on shared rows), one entry is reached by a dogleg on a
free even row instead.
"""

from dataclasses import dataclass, field
from heapq import heappop, heappush

Segment = tuple[int, int, int]
"""A horizontal (row, first column, last column) or vertical (column, first row, last row) line."""


@dataclass(slots=True)
class Source:
    """An item of the left layer with lines to draw: its exit row, where its line starts, and
    the entry rows of its targets (one each, never shared with another source)."""

    row: int
    x0: int
    entries: list[int]


@dataclass(slots=True)
class Route:
    """The lines of one channel; ``width`` columns, the right layer starting at ``xs + width``."""

    width: int
    hsegs: list[Segment] = field(default_factory=list)
    vsegs: list[Segment] = field(default_factory=list)


@dataclass(slots=True)
class _Dogleg:
    row: int
    """The free (even) row that carries the line sideways."""
    entry: int
    col: int = -1


@dataclass(slots=True, eq=False)
class _Bus:
    source_row: int
    rows: set[int]
    entries: list[int]
    track: int = -1
    doglegs: list[_Dogleg] = field(default_factory=list)
    after: "_Bus | None" = None
    """The bus that must stand right of this one: it enters a target on our source's row."""
    lo: int = 0
    hi: int = 0
    """Its first and last row, once the rows are settled."""


def route(sources: list[Source], xs: int, height: int) -> Route:
    """Connectors of a channel starting at column ``xs`` on a canvas ``height`` rows high."""
    plan: list[tuple[Source, list[_Bus], bool]] = []
    bus_of_entry: dict[int, _Bus] = {}
    for src in sources:
        straight = src.row in src.entries
        others = [y for y in src.entries if y != src.row]
        groups = ([[y for y in others if y < src.row], [y for y in others if y > src.row]]
                  if straight else [others])
        buses = [_Bus(src.row, {src.row, *g}, g) for g in groups if g]
        for bus in buses:
            for y in bus.entries:
                bus_of_entry[y] = bus
        plan.append((src, buses, straight))
    for src, buses, straight in plan:
        owner = bus_of_entry.get(src.row)
        if buses and not straight and owner is not None:
            buses[0].after = owner  # our line on this row must end before theirs begins
    every = [b for _, buses, _ in plan for b in buses]
    _break_cycles(every, height)
    for bus in every:
        bus.lo, bus.hi = min(bus.rows), max(bus.rows)
    tracks = _assign_tracks(every)
    used = tracks + _assign_dogleg_columns(every, tracks)
    width = used + 2 if used else 3
    out = Route(width)
    for src, buses, straight in plan:
        _draw(out, src, buses, straight, xs, xs + width)
    return out


def _draw(out: Route, src: Source, buses: list[_Bus], straight: bool, xs: int, xe: int) -> None:
    if straight:
        out.hsegs.append((src.row, src.x0, xe))
    for bus in buses:
        x = xs + 1 + bus.track
        out.vsegs.append((x, bus.lo, bus.hi))
        if not straight:
            out.hsegs.append((src.row, src.x0, x))
        out.hsegs += [(y, x, xe) for y in bus.entries]
        for d in bus.doglegs:
            xd = xs + 1 + d.col
            out.hsegs += [(d.row, x, xd), (d.entry, xd, xe)]
            out.vsegs.append((xd, min(d.row, d.entry), max(d.row, d.entry)))


def _break_cycles(buses: list[_Bus], height: int) -> None:
    """Each bus has at most one ``after``: follow the chains and cut every cycle with a dogleg."""
    state: dict[int, int] = {}  # id -> 1 on the current walk, 2 done
    taken: set[int] = set()
    for start in buses:
        walk: list[_Bus] = []
        bus: _Bus | None = start
        while bus is not None and id(bus) not in state:
            state[id(bus)] = 1
            walk.append(bus)
            bus = bus.after
        if bus is not None and state[id(bus)] == 1:
            cut = walk[-1]  # its ``after`` closes the cycle
            _dogleg(bus, cut.source_row, height, taken)
            cut.after = None
        for b in walk:
            state[id(b)] = 2


def _dogleg(bus: _Bus, entry: int, height: int, taken: set[int]) -> None:
    """Reach ``bus``'s entry on row ``entry`` from a free row next to it, not along that row.

    Every dogleg's line runs to the right of all buses, so two never share a row."""
    rest = bus.rows - {entry}
    toward = -1 if min(rest) < entry else 1
    for k in range(1, 2 * height + 2, 2):
        for row in (entry + toward * k, entry - toward * k):
            if 0 <= row < height and row not in taken:
                taken.add(row)
                bus.entries.remove(entry)
                bus.rows = rest | {row}
                bus.doglegs.append(_Dogleg(row, entry))
                return
    raise AssertionError(f"no free row for a dogleg to row {entry}")


def _assign_tracks(buses: list[_Bus]) -> int:
    """Left-edge assignment: buses by top row fill one track after another; a bus that must
    stand left of another is placed on an earlier track. Returns the number of tracks."""
    before: dict[int, list[_Bus]] = {}
    for bus in buses:
        if bus.after is not None:
            before.setdefault(id(bus.after), []).append(bus)
    todo = sorted(buses, key=lambda b: (b.lo, b.hi))
    track = 0
    while todo:
        last = -1
        rest = []
        for bus in todo:
            if bus.lo > last and all(0 <= b.track < track for b in before.get(id(bus), ())):
                bus.track, last = track, bus.hi
            else:
                rest.append(bus)
        if len(rest) == len(todo):
            raise AssertionError("track constraints form a cycle")
        todo = rest
        track += 1
    return track


def _assign_dogleg_columns(buses: list[_Bus], first: int) -> int:
    """Columns right of the buses for the doglegs' short verticals; returns how many."""
    spans = sorted(((min(d.row, d.entry), max(d.row, d.entry)), k, d)
                   for k, d in enumerate(d for bus in buses for d in bus.doglegs))
    ends: list[tuple[int, int]] = []
    free: list[int] = []
    count = 0
    for (lo, hi), _k, d in spans:
        while ends and ends[0][0] < lo:
            heappush(free, heappop(ends)[1])
        col = heappop(free) if free else count
        count = max(count, col + 1)
        heappush(ends, (hi, col))
        d.col = first + col
    return count
