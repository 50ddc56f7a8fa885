"""Rich text for the side panels: a task of a flow, a task instance of a run, a child task, a run's
header line."""

import json
from collections.abc import Mapping, Sequence

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from flowforge.render import clock, duration, stamp
from flowforge.terminal import safe
from protocol.flows import FlowSpec, TaskSpec
from protocol.records import RunRecord, TaskRecord
from protocol.states import RUN_FINAL, TaskStatus
from tui import palette
from tui.dag_shape import STACK_MARK, STATUS_PRECEDENCE

OUTPUT_LINES = 12
LOG_LINES = 20
MEMBER_ROWS = 40
"""Tasks listed for a collapsed group or a stack."""
BAR_WIDTH = 20


def plain(text: str, style: str = "", **kwargs: object) -> Text:
    """Text as it is (no markup) with control characters made visible: anything shown may
    come from the bus."""
    return Text(safe(text), style=style, **kwargs)  # type: ignore[arg-type]


def _kv(*pairs: tuple[str, str | Text]) -> Text:
    out = Text()
    for key, value in pairs:
        if out:
            out.append("   ")
        out.append(f"{key} ", style="grey62")
        out.append(safe(value) if isinstance(value, str) else value)
    return out


def _dependants(spec: FlowSpec, name: str) -> list[str]:
    return [t.name for t in spec.tasks if name in t.depends_on]


def _options(task: TaskSpec) -> Text:
    pairs = [("queue", task.queue), ("function", task.function)]
    if task.retries:
        pairs.append(("retries", f"{task.retries} (delay {task.retry_delay_s:g} s)"))
    if task.timeout_s is not None:
        pairs.append(("timeout", f"{task.timeout_s:g} s"))
    if task.group:
        pairs.append(("group", task.group))
    if task.is_async:
        pairs.append(("async", "yes"))
    return _kv(*pairs)


def _params(task: TaskSpec) -> Text:
    params = [f"{p.name}: {p.type or 'any'}{'' if p.required else ' (optional)'}" for p in task.params]
    if task.accepts_all_params:
        params.append("**kwargs")
    return _kv(("params", ", ".join(params) or "-"), ("inputs", ", ".join(task.inputs) or "-"))


def flow_task(spec: FlowSpec, name: str) -> RenderableType:
    """A task of a flow: docstring, options, neighbours and source."""
    task = next((t for t in spec.tasks if t.name == name), None)
    if task is None:
        return plain(f"{name}: not in this flow")
    doc, source = spec.described(task)
    title = plain(task.name, style="bold")
    if task.verbose_name:
        title.append(safe(f"  {task.verbose_name}"), style="italic")
    parts: list[RenderableType] = [
        title,
        _options(task),
        _kv(("depends on", ", ".join(task.depends_on) or "-"),
            ("needed by", ", ".join(_dependants(spec, name)) or "-")),
        _params(task),
        plain(""),
        plain(doc.strip() or "(no docstring)", style="italic" if doc else "grey50"),
    ]
    if source:
        parts += [plain(""), Syntax(safe(source.rstrip()), "python", theme="ansi_dark",
                                   background_color="default", word_wrap=False)]
    return Group(*parts)


def _folded_hint(name: str, n: int) -> str:
    if name.startswith(STACK_MARK):
        return f"  {n:,} parallel tasks with the same dependencies, stacked (s unstacks)"
    return f"  {n:,} tasks, collapsed (x expands)"


def flow_group(spec: FlowSpec, name: str, members: Sequence[str]) -> RenderableType:
    """A collapsed group or a stack of a flow: its tasks and what they do (the first ones)."""
    title = plain(name, style="bold")
    title.append(_folded_hint(name, len(members)), style="italic")
    shown = set(members[:MEMBER_ROWS])
    docs = {t.name: (spec.described(t)[0].strip().splitlines() or [""])[0] for t in spec.tasks
            if t.name in shown}
    rows = Table(box=None, show_edge=False, pad_edge=False, show_header=False)
    rows.add_column(style="bold")
    rows.add_column(style="grey70")
    for m in members[:MEMBER_ROWS]:
        rows.add_row(plain(m), plain(docs.get(m, "")))
    return Group(title, rows, *_more(len(members)))


def run_group(name: str, status: TaskStatus, members: Sequence[tuple[str, TaskStatus]]
              ) -> RenderableType:
    """A collapsed group or a stack of a run: the state it shows, how many of its tasks are in
    each state, and the tasks themselves, those not succeeded first."""
    title = plain(f"{name}  ", style="bold")
    title.append_text(palette.task_text(status))
    title.append(_folded_hint(name, len(members)), style="italic")
    counts: dict[TaskStatus, int] = {}
    for _, s in members:
        counts[s] = counts.get(s, 0) + 1
    summary = plain("   ").join(plain(f"{n:,} {s.value}") for s, n in counts.items())
    rank = {s: k for k, s in enumerate(STATUS_PRECEDENCE)}
    shown = sorted(members, key=lambda m: rank.get(m[1], 0))[:MEMBER_ROWS]
    rows = Table(box=None, show_edge=False, pad_edge=False, show_header=False)
    rows.add_column()
    rows.add_column()
    for m, s in shown:
        rows.add_row(m, palette.task_text(s))
    return Group(title, summary, rows, *_more(len(members)))


def _more(n: int) -> list[Text]:
    return [plain(f"… and {n - MEMBER_ROWS:,} more", style="italic grey62")] if n > MEMBER_ROWS else []


def elapsed(start: float | None, end: float | None, now: float) -> str:
    """How long it took, or has taken so far."""
    return duration(start, end if end else (now if start else None))


def progress_bar(fraction: float) -> Text:
    done = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
    return plain("█" * done + "░" * (BAR_WIDTH - done) + f" {fraction:.0%}", style="yellow")


def run_header(run: RunRecord, now: float) -> Text:
    c = run.counts
    head = Text()
    head.append(f"run {run.run_id}", style="bold")
    head.append(safe(f"  flow {run.flow} ({run.version})  "))
    head.append_text(palette.run_text(run.status))
    head.append(f"  {c.done}/{c.total} done, {c.failed} failed, {c.running} running")
    end = run.finished_at if run.status in RUN_FINAL else None
    head.append(f"\nstarted {stamp(run.started_at or run.created_at)}  took "
                f"{elapsed(run.started_at, end, now)}  source {run.source}  params "
                f"{json.dumps(run.params, sort_keys=True)}", style="grey70")
    if run.only is not None:
        head.append(f"\npartial run: only {', '.join(run.only)}", style="italic")
    if run.priority or run.note:  # a run waiting for its turn says why
        head.append(safe("\n" + "  ".join(filter(None, (
            f"priority {run.priority}" if run.priority else "", run.note)))), style="italic")
    return head


def pretty_output(rec: TaskRecord) -> str:
    raw = bytes(rec.output)
    try:
        return json.dumps(json.loads(raw), indent=2, sort_keys=True)
    except ValueError:
        return raw.decode(errors="replace")


def truncated(text: str, lines: int = OUTPUT_LINES) -> tuple[str, int]:
    """The first ``lines`` lines and how many were left out."""
    all_lines = text.splitlines()
    return "\n".join(all_lines[:lines]), max(0, len(all_lines) - lines)


def _attempts(rec: TaskRecord) -> Table:
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="grey62")
    for col in ("#", "outcome", "agent", "started", "took", "error"):
        table.add_column(col)
    for a in rec.history:
        error = f"{a.error_type}: {a.error_message or ''}" if a.error_type else ""
        table.add_row(*map(plain, (str(a.attempt), a.outcome, a.agent_id or "-",
                                   clock(a.started_at), duration(a.started_at, a.finished_at),
                                   error)))
    return table


def run_task(run: RunRecord, spec: FlowSpec | None, rec: TaskRecord | None, name: str,
             now: float, log: str | None = None) -> RenderableType:
    """A task instance of a run: state, timings, progress, params, output, error, attempts,
    and the end of its log (``None``: not fetched yet)."""
    if rec is None:
        return plain(f"{name}: no record yet", style="grey50")
    task = next((t for t in spec.tasks if t.name == name), None) if spec else None
    title = plain(f"{rec.task}  ", style="bold")
    title.append_text(palette.task_text(rec.status))
    tries = f" of {task.retries + 1}" if task else ""
    parts: list[RenderableType] = [
        title,
        _kv(("attempt", f"{rec.attempt}{tries}"), ("agent", rec.agent_id or "-"),
            ("queue", rec.queue)),
        _kv(("queued", clock(rec.queued_at)), ("started", clock(rec.started_at)),
            ("finished", clock(rec.finished_at)),
            ("took", elapsed(rec.started_at, rec.finished_at, now))),
    ]
    parts += _live(rec)
    if task is not None:
        taken = {p.name for p in task.params}
        params = {k: v for k, v in run.params.items() if task.accepts_all_params or k in taken}
        parts.append(_kv(("params", json.dumps(params, sort_keys=True))))
    parts += _result(rec)
    if rec.history:
        parts += [plain("attempts", style="grey62"), _attempts(rec)]
    parts += _log(log)
    return Group(*parts)


def child_task(rec: TaskRecord, function: str, own: Mapping[str, int] | None,
               now: float) -> RenderableType:
    """A child task of a run: its function, state, timings, its own children counted, output,
    error, attempts (the traceback and attempts once an event brought its full record)."""
    title = plain(f"{rec.task}  ", style="bold")
    title.append_text(palette.task_text(rec.status))
    parts: list[RenderableType] = [
        title,
        _kv(("function", function or "…"), ("attempt", str(rec.attempt)),
            ("agent", rec.agent_id or "-")),
        _kv(("started", clock(rec.started_at)), ("finished", clock(rec.finished_at)),
            ("took", elapsed(rec.started_at, rec.finished_at, now))),
    ]
    parts += _live(rec)
    if own:
        line = _kv(("children", ", ".join(f"{n:,} {s}" for s, n in own.items())))
        line.append("   enter lists them", style="italic grey62")
        parts.append(line)
    parts += _result(rec)
    if rec.history:
        parts += [plain("attempts", style="grey62"), _attempts(rec)]
    return Group(*parts)


def log_tail(log: str, lines: int = LOG_LINES) -> tuple[str, int]:
    """The last ``lines`` lines of a log and how many came before them."""
    all_lines = log.splitlines()
    return "\n".join(all_lines[-lines:]), max(0, len(all_lines) - lines)


def _log(log: str | None) -> list[RenderableType]:
    if log is None:
        return [plain("log", style="grey62"), plain("loading…", style="grey50")]
    if not log:
        return [plain("log", style="grey62"), plain("(nothing logged or printed)", style="grey50")]
    shown, hidden = log_tail(log)
    head = plain("log", style="grey62")
    if hidden:
        head.append(f"  last {LOG_LINES} lines, {hidden} before: press g to see all", style="italic")
    return [head, plain(shown)]


def _live(rec: TaskRecord) -> list[RenderableType]:
    out: list[RenderableType] = []
    if rec.progress is not None and rec.status is TaskStatus.RUNNING:
        out.append(_kv(("progress", progress_bar(rec.progress))))
    if rec.checkpoint:
        out.append(_kv(("checkpoint", f"{rec.checkpoint} at {clock(rec.checkpoint_at)}")))
    if rec.retry_at:
        out.append(_kv(("next attempt", clock(rec.retry_at))))
    if rec.note:
        out.append(plain(rec.note, style="italic"))
    return out


def _result(rec: TaskRecord) -> Sequence[RenderableType]:
    out: list[RenderableType] = []
    if rec.status is TaskStatus.SUCCEEDED or bytes(rec.output) != b"null":
        shown, hidden = truncated(pretty_output(rec))
        out += [plain("output", style="grey62"), plain(shown)]
        if hidden:
            out.append(plain(f"… {hidden} more lines: press o to see all", style="italic grey62"))
    if rec.error_type:
        out.append(plain(f"{rec.error_type}: {rec.error_message or ''}", style="bold red"))
    if rec.traceback:
        out.append(plain(rec.traceback.rstrip(), style="red"))
    return out
