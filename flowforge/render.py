"""Plain-text views for the CLI: tables, a run's tasks, a flow's DAG by stages."""

import datetime as dt
from collections.abc import Mapping, Sequence

import msgspec

from protocol.dag import layers_of
from protocol.flows import FlowSpec
from protocol.records import AgentInfo, FlowSummary, RejectedMessage, RunDetail, RunRecord, TaskRecord
from protocol.states import TaskStatus

MAX_CELL = 60


def clock(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def stamp(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def utc_iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(start: float | None, end: float | None) -> str:
    if not start or not end:
        return "-"
    s = end - start
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s" if s < 60 else f"{s / 60:.1f} min"


def seconds(value: float | None) -> str:
    """A span for people: ``850 ms``, ``4.2 s``, ``3.5 min``, ``2.0 h``."""
    if value is None:
        return "-"
    value = max(0.0, value)
    if value < 1:
        return f"{value * 1000:.3g} ms" if value < 0.01 else f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 3600 else f"{value / 3600:.1f} h"


def cut(text: str, width: int = MAX_CELL) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def runs_table(runs: Sequence[RunRecord]) -> str:
    if not runs:
        return "no runs"
    return table(
        ["run", "flow", "status", "started", "duration", "tasks"],
        [
            [r.run_id, r.flow, r.status.value, stamp(r.started_at or r.created_at),
             duration(r.started_at, r.finished_at), f"{r.counts.done}/{r.counts.total}"]
            for r in runs
        ],
    )


def flows_table(flows: Sequence[FlowSummary]) -> str:
    if not flows:
        return "no flows registered"
    return table(
        ["flow", "version", "tasks", "queues", "registered", "last run"],
        [
            [f.name, f.version, str(f.tasks), ",".join(f.queues), stamp(f.registered_at),
             f"{f.last_run_status.value} ({f.last_run_id})" if f.last_run_status else "-"]
            for f in flows
        ],
    )


def agents_table(agents: Sequence[AgentInfo], now: float) -> str:
    if not agents:
        return "no agents have been seen"
    return table(
        ["agent", "status", "host", "queues", "slots", "functions", "last heartbeat"],
        [[a.agent_id, a.status, a.host, ",".join(a.queues), f"{a.slots_busy}/{a.slots_total}",
          str(len(a.functions)), f"{now - a.last_seen:.0f} s ago"] for a in agents],
    )


def rejected_table(items: Sequence[RejectedMessage]) -> str:
    if not items:
        return "no rejected messages"
    return table(
        ["id", "received", "subject", "code", "reason", "raw"],
        [[str(m.id), stamp(m.received_at), m.subject, m.code, cut(m.reason, 70),
          cut(repr(m.raw)[2:-1], 30)] for m in items],
    )


def ordered(detail: RunDetail, spec: FlowSpec | None) -> list[TaskRecord]:
    """Tasks in definition order when the flow is known, else by name."""
    if spec is None:
        return sorted(detail.tasks, key=lambda t: t.task)
    rank = {t.name: i for i, t in enumerate(spec.tasks)}
    return sorted(detail.tasks, key=lambda t: (rank.get(t.task, len(rank)), t.task))


def show_run(detail: RunDetail, spec: FlowSpec | None,
             extra: Mapping[str, list[str]] | None = None) -> str:
    """A run: its header, a table of its tasks, then what more there is to say of each (its
    attempts, note, error; and the lines in ``extra`` for it, such as a mapped task's
    instances)."""
    extra = extra or {}
    run = detail.run
    out = [
        f"run {run.run_id}  flow {run.flow}  version {run.version}  {run.status.value.upper()}",
        f"started {stamp(run.started_at)}  finished {stamp(run.finished_at)}  "
        f"took {duration(run.started_at, run.finished_at)}  source {run.source}",
        f"params {msgspec.json.encode(run.params).decode()}",
    ]
    if run.only is not None:
        out.append(f"partial run: only {', '.join(run.only)}")
    out += [line for line in (f"priority {run.priority}" * bool(run.priority), run.note) if line]
    if run.schedule is not None or run.batch is not None:
        out.append("  ".join(part for part in (
            f"schedule {run.schedule}" if run.schedule else "",
            f"for {utc_iso(run.scheduled_for)}" if run.scheduled_for is not None else "",
            f"batch {run.batch}" if run.batch else "") if part))
    out.append("")
    tasks = ordered(detail, spec)
    out.append(table(
        ["task", "status", "attempt", "agent", "started", "duration", "output"],
        [[t.task, t.status.value + " (held)" * t.held, str(t.attempt), t.agent_id or "-",
          clock(t.started_at), duration(t.started_at, t.finished_at),
          cut(bytes(t.output).decode()) if t.status is TaskStatus.SUCCEEDED else "-"]
         for t in tasks],
    ))
    for t in tasks:
        if t.error_type or t.note or t.checkpoint or len(t.history) > 1 or t.task in extra:
            out.append("")
            out.append(f"── {t.task} ({t.status.value}, attempt {t.attempt})")
            for a in t.history if len(t.history) > 1 or t.started_at is None else []:
                error = f"  {a.error_type}: {cut(a.error_message or '', 70)}" if a.error_type else ""
                out.append(f"   attempt {a.attempt}: {a.outcome:10} on {a.agent_id or '-'} "
                           f"{clock(a.started_at)} {duration(a.started_at, a.finished_at)}{error}")
            if t.checkpoint:
                out.append(f"last checkpoint: {t.checkpoint} at {clock(t.checkpoint_at)}")
            if t.note:
                out.append(t.note)
            if t.error_type:
                out.append(f"{t.error_type}: {t.error_message}")
            if t.traceback:
                out.append(t.traceback.rstrip())
            out += extra.get(t.task, [])
    return "\n".join(out)


MAPPED_ORDER = (TaskStatus.FAILED, TaskStatus.RETRY_WAIT, TaskStatus.RUNNING, TaskStatus.QUEUED,
                TaskStatus.CANCELLED, TaskStatus.PENDING, TaskStatus.SUCCEEDED)
"""The order a mapped task's instances are counted and listed in: what needs a look first."""
MAPPED_LISTED = MAPPED_ORDER[:5]
"""The states whose instances ``show`` lists (the rest are only counted)."""


def mapped_counts(counts: Mapping[str, int], total: int | None) -> str:
    """``98 succeeded, 2 failed of 100 items`` — with the items not reached yet."""
    parts = [f"{counts[s]:,} {s.value}" for s in MAPPED_ORDER if counts.get(s)]
    made = sum(counts.values())
    if total is not None and total > made:
        parts.append(f"{total - made:,} not started")
    text = ", ".join(parts) or "none made yet"
    return text + (f" of {total:,} items" if total is not None else "")


def mapped_lines(run_id: str, task: str, counts: Mapping[str, int], total: int | None,
                 listed: Sequence[TaskRecord]) -> list[str]:
    """A mapped task's instances under its section of ``show``: counted by state, then those
    that need a look (failed first) with their error, and how many more there are."""
    out = [f"instances: {mapped_counts(counts, total)}"]
    if listed:
        rows = [[t.task.rpartition("~")[2], t.status.value, str(t.attempt), t.agent_id or "-",
                 cut(f"{t.error_type}: {t.error_message or ''}" if t.error_type else t.note or "",
                     80)] for t in listed]
        out += ["   " + line for line in table(
            ["index", "status", "attempt", "agent", "error"], rows).splitlines()]
    more = sum(counts.get(s, 0) for s in MAPPED_LISTED) - len(listed)
    if more > 0:
        out.append(f"   … {more:,} more")
    if listed or more > 0:
        out.append(f"   one in full: flowforge show {run_id} --task {task} --map-index INDEX")
    return out


def show_instance(rec: TaskRecord) -> str:
    """One instance of a mapped task: its state, attempts with agents and times, output,
    error and traceback."""
    out = [f"{rec.task} of run {rec.run_id}  {rec.status.value.upper()}  attempt {rec.attempt}",
           f"queue {rec.queue}  agent {rec.agent_id or '-'}  queued {stamp(rec.queued_at)}  "
           f"started {stamp(rec.started_at)}  finished {stamp(rec.finished_at)}  "
           f"took {duration(rec.started_at, rec.finished_at)}"]
    if rec.note:
        out.append(rec.note)
    if rec.history:
        out.append("attempts:")
        for a in rec.history:
            error = f"  {a.error_type}: {a.error_message or ''}" if a.error_type else ""
            out.append(f"   {a.attempt}: {a.outcome:10} on {a.agent_id or '-'} "
                       f"{clock(a.started_at)} {duration(a.started_at, a.finished_at)}{error}")
    if rec.status is TaskStatus.SUCCEEDED:
        out.append(f"output {bytes(rec.output).decode()}")
    if rec.error_type:
        out.append(f"{rec.error_type}: {rec.error_message}")
    if rec.traceback:
        out.append(rec.traceback.rstrip())
    out.append(f"log: flowforge logs {rec.run_id} {rec.task}")
    return "\n".join(out)


def stages(spec: FlowSpec) -> list[list[str]]:
    """Tasks grouped by longest distance from a root (stage 1 = no dependencies)."""
    layer = layers_of({t.name: t.depends_on for t in spec.tasks})
    out: dict[int, list[str]] = {}
    for t in spec.tasks:
        out.setdefault(layer[t.name], []).append(t.name)
    return [out[k] for k in sorted(out)]


def graph_text(
    spec: FlowSpec, version: str, states: Mapping[str, TaskStatus] | None = None
) -> str:
    """A flow's DAG as stages: each task with the tasks it waits for (and its state in a run)."""
    by_name = {t.name: t for t in spec.tasks}
    layers = stages(spec)
    width = max(len(t.name) for t in spec.tasks)
    out = [f"{spec.name}  ({len(spec.tasks)} tasks in {len(layers)} stages, version {version})"]
    if spec.description:
        out.append(spec.description)
    for i, layer in enumerate(layers, start=1):
        out.append("")
        out.append(f"stage {i}")
        for name in layer:
            t = by_name[name]
            line = f"  [{name}]".ljust(width + 5)
            if states and name in states:
                line += f" {states[name].value:15}"
            if t.depends_on:
                line += " ◄── " + ", ".join(t.depends_on)
            extras = []
            if t.queue != "default":
                extras.append(f"queue {t.queue}")
            if t.group:
                extras.append(f"group {t.group}")
            if t.verbose_name:
                extras.append(f'"{t.verbose_name}"')
            if extras:
                line += "   (" + "; ".join(extras) + ")"
            out.append(line.rstrip())
    return "\n".join(out)
