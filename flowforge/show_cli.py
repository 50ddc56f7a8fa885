"""``flowforge show``: a run with each task, a mapped task's instances and a task's children counted
and the ones that need a look listed (failed first); or one instance of a mapped task (``--task T
--map-index I``); or every child of a task (``--children TASK``)."""

import argparse
import sys
from typing import Any

import msgspec

from flowforge import child_show, render, runtime
from flowforge.client import Client
from flowforge.terminal import out, safe_json
from protocol.api import MAX_MAP_INDEX, MapInstances
from protocol.errors import FlowForgeError
from protocol.flows import FlowSpec
from protocol.records import RunDetail, TaskRecord
from protocol.states import TaskStatus

MAX_LISTED = 20
"""Instances ``show`` lists under a mapped task (the others are counted)."""


def add_show_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("run_id")
    c.add_argument("--task", metavar="TASK",
                   help="only this task; with --map-index, one instance of a mapped task")
    c.add_argument("--map-index", type=_map_index, metavar="INDEX",
                   help="with --task: the instance of that index (TASK~INDEX) in full — its "
                   "attempts, output, error and traceback; exits 2 when there is none")
    c.add_argument("--children", metavar="TASK",
                   help="every child task of TASK (a task, a child like TASK/3, or a mapped "
                   "instance like TASK~7) in spawn order: seq, function, status, attempt, time, "
                   "output or error")
    c.add_argument("--status", choices=[s.value for s in TaskStatus],
                   help="with --children: only the children in this state")
    c.add_argument("--json", action="store_true", help="print JSON")


def _map_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_MAP_INDEX:
        raise argparse.ArgumentTypeError(f"{value} is not from 0 to {MAX_MAP_INDEX:,}")
    return value


def _print_json(value: Any) -> None:
    text = msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
    sys.stdout.write(safe_json(text) + "\n")


async def listed(c: Client, run_id: str, task: str, limit: int = MAX_LISTED) -> MapInstances:
    """A mapped task's instances counted by state, and up to ``limit`` of those that need a
    look, failed first (one request per state that has any)."""
    found = await c.instances(run_id, task, status=TaskStatus.FAILED, limit=limit)
    shown = list(found.instances)
    for status in render.MAPPED_LISTED[1:]:
        if len(shown) >= limit:
            break
        if found.counts.get(status):
            page = await c.instances(run_id, task, status=status, limit=limit - len(shown),
                                     counts=False)
            shown += page.instances
    found.instances = shown
    return found


async def run(c: Client, ns: argparse.Namespace) -> int:
    if ns.status and not ns.children:
        raise FlowForgeError("--status needs --children: the task whose children to list")
    if ns.children:
        if ns.map_index is not None:
            raise FlowForgeError("--children and --map-index do not go together")
        return await child_show.list_children(c, ns, _print_json)
    if ns.map_index is not None:
        if not ns.task:
            raise FlowForgeError("--map-index needs --task: the mapped task whose instance to show")
        return await _instance(c, ns)
    detail = await c.get(ns.run_id)
    try:
        spec: FlowSpec | None = (await c.flow(detail.run.flow, detail.run.version)).spec
    except FlowForgeError:
        spec = None
    if ns.task:
        detail = _only(detail, ns.task)
    await print_run(c, detail, spec, ns.json)
    return runtime.EXIT_OK


async def print_run(c: Client, detail: RunDetail, spec: FlowSpec | None, as_json: bool) -> None:
    """A run as ``show`` prints it, the instances of its mapped tasks that started and the
    children of its tasks asked for on the way."""
    run_id = detail.run.run_id
    mapped = {t.name: await listed(c, run_id, t.name) for t in (spec.tasks if spec else [])
              if t.map_over and any(r.task == t.name and r.attempt for r in detail.tasks)}
    kids = await child_show.fetch(c, run_id, {t.task for t in detail.tasks})
    if as_json:
        _print_json(_plain(detail) | ({"mapped": _plain(mapped)} if mapped else {})
                    | ({"children": _plain(child_show.json_of(kids))} if kids.counts else {}))
        return
    extra = {name: render.mapped_lines(run_id, name, m.counts, m.total, m.instances)
             for name, m in mapped.items()}
    for name, lines in child_show.lines_by_task(run_id, kids).items():
        extra[name] = extra.get(name, []) + lines
    out(render.show_run(detail, spec, extra))


def _plain(value: Any) -> Any:
    """As JSON values (outputs are raw JSON, which ``to_builtins`` does not take)."""
    return msgspec.json.decode(msgspec.json.encode(value))


def _only(detail: RunDetail, task: str) -> RunDetail:
    tasks = [t for t in detail.tasks if t.task == task]
    if not tasks:
        raise FlowForgeError(f"run {detail.run.run_id} has no task {task!r}; it has "
                             f"{', '.join(t.task for t in detail.tasks[:20])}")
    return RunDetail(run=detail.run, tasks=tasks)


async def _instance(c: Client, ns: argparse.Namespace) -> int:
    rec: TaskRecord = await c.instance(ns.run_id, ns.task, ns.map_index)
    if ns.json:
        _print_json(rec)
    else:
        out(render.show_instance(rec))
    return runtime.EXIT_OK
