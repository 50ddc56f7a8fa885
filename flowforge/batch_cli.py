"""``flowforge batch submit|list|show|pause|resume|cancel``: one run of a flow per line of a
JSONL file, and what became of each line."""

import argparse
import codecs
import datetime as dt
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from flowforge import render, runtime
from flowforge.batch_calls import BatchSubmission
from flowforge.connection import DEFAULT_NATS_URL, add_connection_args
from flowforge.terminal import out, safe_json
from flowforge.waiting_notes import BatchWaitNotes
from protocol.batch_api import BatchDetail
from protocol.batches import (
    DEFAULT_MAX_ACTIVE,
    ITEM_DONE,
    MAX_ACTIVE_LIMIT,
    MAX_ITEMS,
    BatchRecord,
    BatchState,
    ItemStatus,
    Reprocess,
)
from protocol.errors import ErrorCode, FlowForgeError
from protocol.limits import MAX_LIST_LIMIT

SKIPPED_SHOWN = 20
"""Skipped items listed by ``submit`` in text (``--json`` has them all)."""
MAX_ITEMS_SHOWN = 1_000
"""Items with nothing more to come, in the order counts are shown."""
COUNTS_ORDER = (*ITEM_DONE, ItemStatus.RUNNING, ItemStatus.PENDING, ItemStatus.WAITING)
_ITEM_AT = re.compile(r"^item (\d+) \(line \d+\): ")
_decoder = msgspec.json.Decoder()


def whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not from {low} to {high:,}")
        return value

    return parse


def add_batch_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    b = sub.add_parser("batch", help="one run of a flow per parameter set (a JSONL file)",
                       description="Batches: one run of a flow per parameter set, at most "
                       "--max-active at once; parameters that already ran are not run again.")
    verbs = b.add_subparsers(dest="batch_command", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        c = verbs.add_parser(name, help=help_text, description=help_text)
        add_connection_args(c, nats_default=DEFAULT_NATS_URL)
        c.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait for each coordinator answer (default: %(default)s)")
        c.add_argument("--json", action="store_true", help="print JSON")
        return c

    _add_submit(verb("submit", "run a flow once per line of a JSONL file of parameters"))
    c = verb("list", "batches, newest first, with their progress")
    c.add_argument("--flow", help="only batches of this flow")
    c.add_argument("--limit", type=whole(1, MAX_LIST_LIMIT), default=50, metavar="N",
                   help=f"1 to {MAX_LIST_LIMIT:,} (default: %(default)s)")
    c = verb("show", "a batch, its counts and its items (seq, status, run, params, reason)")
    c.add_argument("ref", metavar="REF", help="a batch id, or a name (its newest batch)")
    c.add_argument("--items", type=whole(0, MAX_ITEMS_SHOWN), default=20, metavar="N",
                   help=f"items shown, 0 to {MAX_ITEMS_SHOWN:,} (default: %(default)s)")
    c.add_argument("--after", type=whole(-1, MAX_ITEMS), default=-1, metavar="SEQ",
                   help="items after this place in the batch (default: from the first)")
    c.add_argument("--status", choices=[s.value for s in ItemStatus], help="only these items")
    for name, help_text in (("pause", "start no more of its items (runs going on finish)"),
                            ("resume", "start its items again"),
                            ("cancel", "start no more of its items and cancel its active runs")):
        c = verb(name, help_text)
        c.add_argument("ref", metavar="REF", help="a batch id, or a name (its newest batch)")
        if name == "pause":
            c.add_argument("--note", metavar="TEXT", help="why (shown by list and show)")


def _add_submit(c: argparse.ArgumentParser) -> None:
    c.add_argument("flow", metavar="FLOW", help="name of a registered flow")
    c.add_argument("--params", required=True, metavar="FILE",
                   help="one JSON object of run parameters a line (blank lines are ignored); "
                   "- reads stdin")
    c.add_argument("--name", help="a name for the batch (show, pause... take it as REF)")
    c.add_argument("--reprocess", choices=[r.value for r in Reprocess], default=Reprocess.NONE.value,
                   help="parameters that ran before run again: none; failed (those whose last "
                   "run failed); all (default: %(default)s)")
    c.add_argument("--max-active", type=whole(1, MAX_ACTIVE_LIMIT), default=DEFAULT_MAX_ACTIVE,
                   metavar="N", help="runs of the batch at once (default: %(default)s)")
    c.add_argument("--dry-run", action="store_true",
                   help="say what would run and what would be skipped; create nothing")
    c.add_argument("--wait", action="store_true",
                   help="wait for the batch to end; exit 1 if any item failed or was cancelled")
    c.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --wait: give up waiting after this long (default: no limit)")


# -- the parameter file --------------------------------------------------------------------------


class ParamsFile(NamedTuple):
    """The parameter sets of a JSONL file, and the line each came from."""

    label: str
    """The file as the user named it (``<stdin>`` for ``-``)."""
    items: list[dict[str, Any]]
    lines: list[int]
    """``lines[seq]``: the line (from 1) of item ``seq``."""

    def where(self, seq: int) -> str:
        return f"line {self.lines[seq]}" if 0 <= seq < len(self.lines) else f"item {seq}"


def read_params(path: str) -> ParamsFile:
    """Every line a JSON object, blank lines skipped; FlowForgeError naming FILE:LINE."""
    label = "<stdin>" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise FlowForgeError(f"--params {path}: {exc.strerror or exc}") from None
    items: list[dict[str, Any]] = []
    lines: list[int] = []
    for n, line in enumerate(data.removeprefix(codecs.BOM_UTF8).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise FlowForgeError(f"{label}:{n}: not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise FlowForgeError(f"{label}:{n}: a JSON object of parameters is needed, not "
                                 f"{_kind(value)}")
        items.append(value)
        lines.append(n)
    if not items:
        raise FlowForgeError(f"{label} holds no parameter sets (one JSON object a line)")
    return ParamsFile(label, items, lines)


def _kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(type(value), "a number")


def prepare(ns: argparse.Namespace) -> None:
    """Before connecting: read ``submit``'s file, so a mistake in it is told with no
    coordinator and nothing is submitted."""
    if ns.batch_command != "submit":
        return
    if ns.wait and ns.dry_run:
        raise FlowForgeError("--wait has nothing to wait for with --dry-run")
    ns.params_file = read_params(ns.params)


# -- verbs ---------------------------------------------------------------------------------------


async def run(client: Any, ns: argparse.Namespace) -> int:
    """One ``batch`` verb; prints its answer (JSON with --json)."""
    if ns.batch_command == "submit":
        return await _submit(client, ns)
    actions: dict[str, Callable[[], Any]] = {
        "list": lambda: client.batches(limit=ns.limit, flow=ns.flow),
        "show": lambda: client.batch(ns.ref, items=ns.items, after_seq=ns.after,
                                     status=ns.status),
        "pause": lambda: client.pause_batch(ns.ref, ns.note),
        "resume": lambda: client.resume_batch(ns.ref),
        "cancel": lambda: client.cancel_batch(ns.ref),
    }
    answer = await actions[ns.batch_command]()
    if ns.json:
        print_json(answer)
    elif ns.batch_command == "list":
        out(list_text(answer))
    elif ns.batch_command == "show":
        out(show_text(answer, ns.items))
    else:
        out(headline(answer))
    return runtime.EXIT_OK


async def _submit(client: Any, ns: argparse.Namespace) -> int:
    f: ParamsFile = ns.params_file
    try:
        sub: BatchSubmission = await client.submit_batch(
            ns.flow, f.items, name=ns.name, reprocess=ns.reprocess, max_active=ns.max_active,
            dry_run=ns.dry_run)
    except FlowForgeError as exc:
        raise _at_line(exc, f) from None
    if not ns.json:
        out(submission_text(sub, f))
    if not ns.wait or sub.batch is None:
        if ns.json:
            print_json(sub)
        return runtime.EXIT_OK
    batch_id = sub.batch.batch_id
    if not ns.json:
        out(f"waiting for batch {batch_id}…", file=sys.stderr)
    try:
        final: BatchRecord = await client.wait_batch(
            batch_id, timeout_s=ns.wait_timeout,
            on_record=None if ns.json else BatchWaitNotes(client, batch_id))
    except TimeoutError:
        if ns.json:  # a script still learns the batch's id
            print_json(sub)
        out(f"flowforge batch: batch {batch_id} is still going after --wait-timeout; follow it "
            f"with `flowforge batch show {batch_id}`", file=sys.stderr)
        return runtime.EXIT_FAILED
    if ns.json:
        print_json(msgspec.structs.replace(sub, batch=final))
    else:
        out(f"batch {batch_id} {final.state.value}: {_counts(final)}")
    return exit_code(final)


def exit_code(record: BatchRecord) -> int:
    """As ``run --wait``: 0 when the batch is done and no item failed or was cancelled."""
    bad = record.counts.get(ItemStatus.FAILED, 0) + record.counts.get(ItemStatus.CANCELLED, 0)
    return runtime.EXIT_OK if record.state is BatchState.DONE and not bad else runtime.EXIT_FAILED


def _at_line(exc: FlowForgeError, f: ParamsFile) -> FlowForgeError:
    """A bad item named by its place in the batch, named by its line in the file instead."""
    found = _ITEM_AT.match(exc.message)
    if exc.code is not ErrorCode.INVALID_PARAMS or found is None:
        return exc
    seq = int(found.group(1))
    return FlowForgeError(f"{f.label}:{f.lines[seq] if seq < len(f.lines) else '?'}: "
                          f"{exc.message[found.end():]} (item {seq})")


# -- text ----------------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    out(safe_json(msgspec.json.format(msgspec.json.encode(value), indent=2).decode()))


def _named(record: BatchRecord) -> str:
    return f"batch {record.batch_id}" + (f" ({record.spec.name})" if record.spec.name else "")


def headline(record: BatchRecord) -> str:
    """``batch ID (NAME)  flow F  STATE: note``."""
    state = record.state.value.upper() + (f": {record.note}" if record.note else "")
    return f"{_named(record)}  flow {record.spec.flow}  {state}"


def _counts(record: BatchRecord) -> str:
    """``4 succeeded, 1 failed, 1 skipped``."""
    return ", ".join(f"{record.counts[s]} {s.value}" for s in COUNTS_ORDER
                     if record.counts.get(s)) or "no items"


def submission_text(sub: BatchSubmission, f: ParamsFile) -> str:
    skipped = sub.total - sub.to_run
    if sub.batch is None:
        lines = [f"dry run: {sub.total} items, would run {sub.to_run}, would skip {skipped}"]
    else:
        lines = [f"{_named(sub.batch)}: {sub.total} items, {sub.to_run} to run, "
                 f"{skipped} skipped"]
    more = ("--json lists them all" if len(sub.skipped) == skipped or sub.batch is None
            else f"`flowforge batch show {sub.batch.batch_id} --status skipped` lists them")
    lines += reasons_text([(f"{f.where(seq)} (item {seq})", why)
                           for seq, why in sub.skipped.items()], skipped, more)
    return "\n".join(lines)


def reasons_text(reasons: list[tuple[str, str]], total: int, more: str) -> list[str]:
    """The first SKIPPED_SHOWN of ``total`` skipped things as ``  what: why`` lines, then
    ``  … and N more (more)``."""
    lines = [f"  {what}: {why}" for what, why in reasons[:SKIPPED_SHOWN]]
    if total > len(lines):
        lines.append(f"  … and {total - len(lines)} more ({more})")
    return lines


def _utc(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_text(records: list[BatchRecord]) -> str:
    if not records:
        return "no batches"
    rows = [[r.batch_id, r.spec.name or "-", r.spec.flow,
             r.state.value + (f": {render.cut(r.note, 30)}" if r.note else ""),
             f"{r.done()}/{r.total}", _counts(r)]
            for r in records]
    return render.table(["batch", "name", "flow", "state", "done", "items"], rows)


def show_text(detail: BatchDetail, page: int) -> str:
    """The batch, its counts and its items; a full ``page`` of items says how to see more."""
    r, spec = detail.batch, detail.batch.spec
    origin = (f"backfill of schedule {spec.schedule}" if spec.schedule
              else f"reprocess {spec.reprocess.value}")
    lines = [headline(r),
             f"{origin}  max active {spec.max_active}  "
             f"created {render.stamp(r.created_at)}  finished {render.stamp(r.finished_at)}",
             f"{r.total} items, {r.done()} done: {_counts(r)}"]
    if not detail.items:
        return "\n".join(lines)
    nominal = any(i.scheduled_for is not None for i in detail.items)
    rows = [[str(i.seq), i.status.value, i.run_id or "-",
             *([_utc(i.scheduled_for)] if nominal else []),
             render.cut(msgspec.json.encode(i.params).decode(), 40), render.cut(i.reason or "")]
            for i in detail.items]
    headers = ["seq", "status", "run", *(["nominal"] if nominal else []), "params", "reason"]
    lines += ["", render.table(headers, rows)]
    last = detail.items[-1].seq
    if len(detail.items) == page and last < r.total - 1:
        lines.append(f"… more with --after {last}")
    return "\n".join(lines)
