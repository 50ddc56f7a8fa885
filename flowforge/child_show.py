"""``flowforge show`` of child tasks: under each task its children counted by state and those
that need a look listed (failed first), with the tasks below it that have children of their own
(its children, a mapped task's instances) counted beneath, indented by depth; or every child of
one task, a page at a time (``--children TASK``)."""

import argparse
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowforge import render, runtime
from flowforge.client import Client
from flowforge.terminal import out
from protocol.children import CHILD_SEP, ChildInfo, child_name, depth_of, root_of
from protocol.errors import FlowForgeError
from protocol.states import TaskStatus

MAX_LISTED = 10
"""Children ``show`` lists under a task (the others are counted)."""
MAX_NESTED = 20
"""Tasks below a flow task whose children ``show`` counts (the others are only numbered)."""
PAGE = 1_000
"""Children ``--children`` asks for at once."""
LISTED_STATES = render.MAPPED_LISTED
"""The states whose children ``show`` lists, in this order (the rest are only counted)."""


@dataclass(frozen=True, slots=True)
class RunChildren:
    """A run's children as ``show`` prints them."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per parent (a task, a child, a mapped instance): its children counted by state."""
    listed: dict[str, list[ChildInfo]] = field(default_factory=dict)
    """Per flow task: its children that need a look, failed first."""


def task_of(parent: str) -> str:
    """The flow task a parent belongs to: ``train`` for ``train/0/3`` and ``score`` for
    ``score~7/0``."""
    return root_of(parent).partition("~")[0]


def path_key(name: str) -> tuple[Any, ...]:
    """Orders names as a tree, numbers by value: ``t``, ``t/0``, ``t/0/1``, ``t/2``, ``t/10``."""
    root, *seqs = name.split(CHILD_SEP)
    task, _, index = root.partition("~")
    return (task, int(index) if index.isdigit() else -1, *(int(s) for s in seqs if s.isdigit()))


def count_text(counts: Mapping[str, int]) -> str:
    """``50 (1 failed, 1 running, 48 succeeded)``: what needs a look first."""
    known = [s.value for s in render.MAPPED_ORDER]
    order = known + sorted(s for s in counts if s not in known)
    parts = [f"{counts[s]:,} {s}" for s in order if counts.get(s)]
    return f"{sum(counts.values()):,} ({', '.join(parts)})"


async def needing_look(c: Client, run_id: str, parent: str, counts: Mapping[str, int],
                       limit: int = MAX_LISTED) -> list[ChildInfo]:
    """Up to ``limit`` children of ``parent`` in ``LISTED_STATES``, failed first (one request per
    state that has any)."""
    found: list[ChildInfo] = []
    for status in LISTED_STATES:
        left = limit - len(found)
        if left <= 0:
            break
        if counts.get(status.value):
            page = await c.children(run_id, parent, limit=left, status=status)
            found += page.children[:left]
    return found


async def fetch(c: Client, run_id: str, tasks: Collection[str] | None = None) -> RunChildren:
    """The run's children counted per parent (only below ``tasks`` if given), and those of each
    flow task that need a look."""
    counts = (await c.children(run_id, limit=0)).counts
    if tasks is not None:
        counts = {p: n for p, n in counts.items() if task_of(p) in tasks}
    listed = {p: await needing_look(c, run_id, p, n) for p, n in counts.items() if p == task_of(p)}
    return RunChildren(counts, listed)


def lines_by_task(run_id: str, kids: RunChildren) -> dict[str, list[str]]:
    """What ``show`` prints of the children in each flow task's section."""
    below: dict[str, list[str]] = {}
    for parent in sorted(kids.counts, key=path_key):
        below.setdefault(task_of(parent), []).append(parent)
    out_lines: dict[str, list[str]] = {}
    for task, parents in below.items():
        lines = _own_lines(run_id, task, kids) if task in kids.counts else []
        nested = [p for p in parents if p != task]
        for parent in nested[:MAX_NESTED]:
            indent = "   " * (depth_of(parent) + ("~" in root_of(parent)))
            lines.append(f"{indent}{parent}  children: {count_text(kids.counts[parent])}")
        if len(nested) > MAX_NESTED:
            lines.append(f"   … {len(nested) - MAX_NESTED:,} more tasks below {task} with children")
        if nested:
            lines.append(f"   one's children: flowforge show {run_id} --children {nested[0]}")
        out_lines[task] = lines
    return out_lines


def _own_lines(run_id: str, task: str, kids: RunChildren) -> list[str]:
    """A flow task's own children: counted, then those that need a look with their error."""
    counts = kids.counts[task]
    listed = kids.listed.get(task, [])
    lines = [f"children: {count_text(counts)}"]
    if listed:
        rows = [[str(k.seq), k.status.value, str(k.attempt), k.function, k.agent_id or "-",
                 render.cut(error_of(k), 70)] for k in listed]
        lines += ["   " + line for line in render.table(
            ["seq", "status", "attempt", "function", "agent", "error"], rows).splitlines()]
    more = sum(counts.get(s.value, 0) for s in LISTED_STATES) - len(listed)
    if more > 0:
        lines.append(f"   … {more:,} more")
    if listed or more > 0:
        lines.append(f"   all of them: flowforge show {run_id} --children {task}")
    return lines


def error_of(k: ChildInfo) -> str:
    """Its error, or why it is as it is (a cancelled child's note)."""
    return f"{k.error_type}: {k.error_message or ''}" if k.error_type else k.note or ""


def result_of(k: ChildInfo) -> str:
    """A child's output once it succeeded, else its error or note (or ``-``)."""
    if k.status is TaskStatus.SUCCEEDED:
        return bytes(k.output).decode()
    return error_of(k) or "-"


def json_of(kids: RunChildren) -> dict[str, Any]:
    """Per parent: its children counted by state, and for a flow task those listed."""
    return {p: {"counts": n, **({"listed": kids.listed[p]} if p in kids.listed else {})}
            for p, n in sorted(kids.counts.items(), key=lambda item: path_key(item[0]))}


# -- --children TASK ---------------------------------------------------------------------------

HEADERS = ("seq", "status", "attempt", "function", "took", "children", "output or error")


def child_row(k: ChildInfo, counts: Mapping[str, Mapping[str, int]]) -> list[str]:
    own = counts.get(child_name(k.parent, k.seq))
    return [str(k.seq), k.status.value, str(k.attempt), k.function,
            render.duration(k.started_at, k.finished_at), str(sum(own.values())) if own else "-",
            render.cut(result_of(k), 70)]


def row_text(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


async def list_children(c: Client, ns: argparse.Namespace, print_json: Any) -> int:
    """Every child of ``ns.children`` (in ``ns.status`` if given) in spawn order, printed a page
    at a time (as one JSON document with ``--json``)."""
    run_id, parent = ns.run_id, ns.children
    counts = (await c.children(run_id, limit=0)).counts
    own = counts.get(parent, {})
    if not own:
        await _known_task(c, run_id, parent)
    if ns.json:
        kids = [k async for k in c.all_children(run_id, parent, status=ns.status, page=PAGE)]
        print_json({"run_id": run_id, "parent": parent, "counts": own, "children": kids})
        return runtime.EXIT_OK
    if not own:
        out(f"{parent} has no child tasks in run {run_id}")
        return runtime.EXIT_OK
    only = f" {ns.status}" if ns.status else ""
    out(f"children of {parent} in run {run_id}: {count_text(own)}")
    widths: list[int] | None = None
    shown = 0
    async for k in c.all_children(run_id, parent, status=ns.status, page=PAGE):
        cells = child_row(k, counts)
        if widths is None:  # printed a page at a time: the columns are set before the rows
            widths = _widths(own, cells)
            out(row_text([h.upper() for h in HEADERS], widths))
        out(row_text(cells, widths))
        shown += 1
    if shown == 0:
        out(f"none{only}")
    if any(p.startswith(parent + CHILD_SEP) for p in counts):
        out(f"a child's children: flowforge show {run_id} --children {parent}{CHILD_SEP}SEQ")
    return runtime.EXIT_OK


async def _known_task(c: Client, run_id: str, parent: str) -> None:
    """Raise FlowForgeError unless ``parent`` names a task of the run (or a child or an instance
    of one): "no children" is no answer for a misspelt name."""
    await c.children(run_id, parent, limit=0)  # a name that cannot be a task's is refused
    tasks = [t.task for t in (await c.get(run_id)).tasks]
    if task_of(parent) not in tasks:
        raise FlowForgeError(f"run {run_id} has no task {task_of(parent)!r}; it has "
                             f"{', '.join(tasks[:20])}")


def _widths(own: Mapping[str, int], first: Sequence[str]) -> list[int]:
    """Columns wide enough for every child's seq, state, attempt and time, and the first one's
    function (a longer one pushes its row out)."""
    wide = [len(str(sum(own.values()))), max(map(len, own)), 3, len(first[3]), len("999.9 min"),
            0, 0]
    return [max(len(h), w) for h, w in zip(HEADERS, wide, strict=True)]
