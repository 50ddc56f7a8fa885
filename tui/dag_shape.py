"""How a DAG is drawn: the zoom level (label width), which groups are collapsed to one box,
and whether wide fan-outs are stacked.

A collapsed group is one node named ``GROUP_MARK + group`` (task names cannot hold a space,
so it never clashes): it depends on what its tasks depend on outside the group, and what
depended on any of its tasks depends on it. A group with an outside task (or collapsed
group) between its tasks stays open: one box would draw a cycle (``why_not_collapsible``).

A stack is what a map-style fan-out becomes: ``STACK_MIN`` or more tasks with the same
dependencies, the same dependants and the same group are drawn as one box named
``STACK_MARK + first task`` (on by default: root → 10,000 tasks → join reads as three boxes
instead of a 40,000-row picture). Stacking never draws a cycle: every task of a stack sits in
the same place of the graph. Pure: no Textual, no I/O.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from protocol.flows import FlowSpec
from protocol.states import TaskStatus
from tui.dag_graph import Node

ZOOM_LABELS = (24, 12, 5)
"""Longest label drawn at each zoom level: 0 is the default, higher levels show more tasks."""
GROUP_MARK = "▣ "
STACK_MARK = "≡ "
STACK_MIN = 8

STATUS_PRECEDENCE = (
    TaskStatus.FAILED, TaskStatus.RUNNING, TaskStatus.RETRY_WAIT, TaskStatus.QUEUED,
    TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED, TaskStatus.PENDING, TaskStatus.SKIPPED,
    TaskStatus.SUCCEEDED,
)
"""A collapsed group shows the first of these states that any of its tasks is in."""


@dataclass(frozen=True, slots=True)
class Shape:
    zoom: int = 0
    collapsed: frozenset[str] = frozenset()
    stacked: bool = True

    @property
    def max_label(self) -> int:
        return ZOOM_LABELS[self.zoom]

    def zoomed(self, step: int) -> "Shape":
        zoom = max(0, min(len(ZOOM_LABELS) - 1, self.zoom + step))
        return Shape(zoom, self.collapsed, self.stacked)

    def toggled(self, group: str) -> "Shape":
        return Shape(self.zoom, self.collapsed ^ {group}, self.stacked)

    def with_collapsed(self, groups: Iterable[str]) -> "Shape":
        return Shape(self.zoom, frozenset(groups), self.stacked)

    def restacked(self) -> "Shape":
        return Shape(self.zoom, self.collapsed, not self.stacked)


@dataclass(frozen=True, slots=True)
class Shaped:
    """The nodes to lay out, and the tasks behind each collapsed group's node."""

    nodes: list[Node]
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)


def group_node(group: str) -> str:
    return GROUP_MARK + group


def groups_of(spec: FlowSpec) -> dict[str, list[str]]:
    """Every group and its tasks, in definition order."""
    out: dict[str, list[str]] = {}
    for task in spec.tasks:
        if task.group:
            out.setdefault(task.group, []).append(task.name)
    return out


def quotient(spec: FlowSpec, folded: Iterable[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Dependencies between the boxes drawn when the ``folded`` groups are one box each, and
    the box of every folded task."""
    groups = groups_of(spec)
    node_of = {m: group_node(g) for g in folded for m in groups.get(g, ())}
    deps: dict[str, dict[str, None]] = {}
    for task in spec.tasks:
        me = node_of.get(task.name, task.name)
        row = deps.setdefault(me, {})
        row.update((node_of.get(d, d), None) for d in task.depends_on if node_of.get(d, d) != me)
    return {k: list(v) for k, v in deps.items()}, node_of


def why_not_collapsible(spec: FlowSpec, group: str, collapsed: Iterable[str] = ()) -> str | None:
    """None if the group can be drawn as one box beside the ``collapsed`` ones, else why not:
    something outside it runs between its tasks, so one box would both feed and wait for it."""
    groups = groups_of(spec)
    if group not in groups:
        return f"there is no group {group!r} in flow {spec.name!r}"
    deps, _ = quotient(spec, [g for g in collapsed if g != group])
    inside = set(groups[group])
    dependants: dict[str, list[str]] = {}
    for name, ds in deps.items():
        for d in ds:
            dependants.setdefault(d, []).append(name)
    below = _downstream(inside, dependants) - inside
    between = sorted(n for n in below if _downstream({n}, dependants) & inside)
    if not between:
        return None
    what = (f"group {between[0][len(GROUP_MARK):]!r}" if between[0].startswith(GROUP_MARK)
            else f"task {between[0]!r}")
    return f"{what} is outside group {group!r} but runs between its tasks; one box would draw a cycle"


def _downstream(starts: set[str], dependants: Mapping[str, list[str]]) -> set[str]:
    """Everything that (transitively) depends on one of ``starts``."""
    seen: set[str] = set()
    stack = [d for s in starts for d in dependants.get(s, ())]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(dependants.get(name, ()))
    return seen


def foldable(spec: FlowSpec, groups: Iterable[str]) -> list[str]:
    """The groups, in name order, that can be collapsed together: each one that would draw a
    cycle beside those before it stays open."""
    folded: list[str] = []
    for g in sorted(set(groups)):
        if why_not_collapsible(spec, g, folded) is None:
            folded.append(g)
    return folded


def shaped_nodes(spec: FlowSpec, collapsed: Iterable[str] = (), stacked: bool = False) -> Shaped:
    """The flow's nodes with the ``foldable`` groups of ``collapsed`` drawn as one node each,
    standing where the group's first task was, and with ``stacked`` the wide fan-outs too."""
    groups = groups_of(spec)
    folded = foldable(spec, collapsed)
    deps, node_of = quotient(spec, folded)
    members = {group_node(g): tuple(groups[g]) for g in folded}
    nodes: list[Node] = []
    for task in spec.tasks:
        me = node_of.get(task.name)
        if me is None:
            nodes.append(Node(task.name, tuple(deps[task.name]), task.group, task.name,
                              task.map_over is not None))
        elif task.name == members[me][0]:
            label = f"{me} ({len(members[me])})"
            nodes.append(Node(me, tuple(deps[me]), None, label))
    return _stack(nodes, members) if stacked else Shaped(nodes, members)


def _stack(nodes: list[Node], members: dict[str, tuple[str, ...]]) -> Shaped:
    """Draw every class of ``STACK_MIN`` or more plain tasks that share dependencies,
    dependants and group as one node."""
    dependants: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for d in n.deps:
            if d in dependants:
                dependants[d].append(n.name)
    classes: dict[tuple[frozenset[str], frozenset[str], str | None], list[str]] = {}
    for n in nodes:
        if n.name not in members:
            key = (frozenset(n.deps), frozenset(dependants[n.name]), n.group)
            classes.setdefault(key, []).append(n.name)
    stack_of = {name: STACK_MARK + names[0] for names in classes.values()
                if len(names) >= STACK_MIN for name in names}
    if not stack_of:
        return Shaped(nodes, members)
    stacks: dict[str, list[str]] = {}
    for name, stack in stack_of.items():
        stacks.setdefault(stack, []).append(name)
    out: list[Node] = []
    for n in nodes:
        deps = tuple(dict.fromkeys(stack_of.get(d, d) for d in n.deps))
        stack = stack_of.get(n.name)
        if stack is None:
            out.append(Node(n.name, deps, n.group, n.label, n.mapped))
        elif stacks[stack][0] == n.name:
            names = stacks[stack]
            out.append(Node(stack, deps, n.group, f"{len(names):,}× {names[0]} … {names[-1]}"))  # noqa: RUF001
    return Shaped(out, members | {s: tuple(names) for s, names in stacks.items()})


def group_status(statuses: Iterable[TaskStatus]) -> TaskStatus:
    """The state a collapsed group shows for the states of its tasks."""
    present = set(statuses)
    return next((s for s in STATUS_PRECEDENCE if s in present), TaskStatus.PENDING)
