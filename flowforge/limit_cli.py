"""``flowforge limit set|list|delete``: concurrency limits of queues, and every limit's holders
and waiters (tasks' max_active, flows' max_active_runs and concurrency keys come from code)."""

import argparse
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from flowforge import render, runtime
from flowforge.connection import DEFAULT_NATS_URL, add_connection_args
from flowforge.terminal import out, safe_json
from protocol.concurrency import MAX_LIMIT, LimitInfo, Slot
from protocol.limits import NAME_PATTERN

_QUEUE_LIMIT = re.compile(r"^queue:" + NAME_PATTERN[1:])
HOLDERS_SHOWN = 2
"""Holders named per limit in the table, with the next waiter (``--json`` has up to
--holders of each)."""


def limit_name(text: str) -> str:
    """An argparse type: ``queue:<name>`` (the limits set in code are changed in code)."""
    if not _QUEUE_LIMIT.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not queue:<name>; a task's max_active, a flow's max_active_runs and "
            "its concurrency key are set in the flow's definition")
    return text


def slots(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not from 0 to {MAX_LIMIT:,}")
    return value


def add_limit_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "limit", help="concurrency limits: set a queue's, list all with holders and waiters",
        description="Concurrency limits, enforced by the coordinator as it sends tasks: a "
        "queue's (set here), a task's max_active, a flow's max_active_runs and its concurrency "
        "key (set in code). A task held back says why in `flowforge show`.",
        epilog="examples:\n  flowforge limit set queue:gpu 2\n  flowforge limit list\n"
               "  flowforge limit delete queue:gpu",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="limit_command", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        c = verbs.add_parser(name, help=help_text, description=help_text)
        add_connection_args(c, nats_default=DEFAULT_NATS_URL)
        c.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait for the coordinator's answer (default: %(default)s)")
        c.add_argument("--json", action="store_true", help="print JSON")
        return c

    c = verb("set", "at most N tasks of a queue queued or running at once, from now (raised: "
             "waiting tasks go; lowered: nothing running is stopped; 0 holds the queue)")
    c.add_argument("name", type=limit_name, metavar="queue:NAME")
    c.add_argument("limit", type=slots, metavar="N")
    c = verb("list", "every limit, with how many hold it and wait for it, and who")
    c.add_argument("--holders", type=int, default=20, choices=range(0, 1001), metavar="N",
                   help="holders and waiters named per limit with --json (default: %(default)s)")
    c = verb("delete", "the queue is no longer limited (its waiting tasks go)")
    c.add_argument("name", type=limit_name, metavar="queue:NAME")


def _slot(slot: Slot) -> str:
    text = f"run {slot.run_id}" + (f" task {slot.task}" if slot.task else "")
    return text + (f" (priority {slot.priority})" if slot.priority else "")


def _named(slots: Sequence[Slot], total: int, shown: int) -> str:
    names = [_slot(s) for s in slots[:shown]]
    more = total - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "") if names else "-"


def limits_table(limits: Sequence[LimitInfo]) -> str:
    if not limits:
        return "no limits: `flowforge limit set queue:NAME N`, or max_active, max_active_runs " \
               "and concurrency in a flow's definition"
    return render.table(
        ["limit", "slots", "holding", "waiting", "set by", "held by", "next"],
        [[info.name, "-" if info.limit is None else str(info.limit), str(info.holding),
          str(info.waiting), info.origin, _named(info.holders, info.holding, HOLDERS_SHOWN),
          _named(info.waiters, info.waiting, 1)] for info in limits])


async def run(client: Any, ns: argparse.Namespace) -> int:
    """One ``limit`` verb; prints its answer (JSON with --json)."""
    if ns.limit_command == "set":
        answer: Any = await client.set_limit(ns.name, ns.limit)
    elif ns.limit_command == "delete":
        answer = await client.delete_limit(ns.name)
    else:
        answer = await client.limits(holders=ns.holders)
    if ns.json:
        out(safe_json(msgspec.json.format(msgspec.json.encode(answer), indent=2).decode()))
    elif ns.limit_command == "list":
        out(limits_table(answer))
    elif ns.limit_command == "set":
        out(f"{answer.name}: {answer.limit} at once ({answer.holding} holding, "
            f"{answer.waiting} waiting)")
    else:
        out(f"{answer.name}: no limit ({answer.holding} running or queued)")
    return runtime.EXIT_OK
