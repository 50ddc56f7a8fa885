"""Child tasks from inside a task: ``ctx.spawn``, ``ctx.map`` and ``ctx.gather``.

Spawning only numbers the child and keeps it; the children go to the coordinator together
when the task waits for them (or when it returns: a task ends after its children, and
fails if one of them failed). Each is numbered in spawn order, so the task's next attempt
spawns the same children and finds them: those that succeeded are not run again.

Waiting happens in the agent, which lends the task's slot to other tasks meanwhile — the
children may need it — and takes it back before the task goes on.
"""

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from flowforge.child_task import options_of
from flowforge.introspect import function_ref, is_context, signature_of
from flowforge.registry import REGISTRY
from protocol.children import (
    MAX_RANGES,
    MAX_SPAWN_AT_ONCE,
    AwaitChildren,
    ChildOutcome,
    ChildResults,
    ChildSpawn,
    GetChildResults,
    SeqRange,
    SpawnChildren,
    Spawned,
    child_name,
)
from protocol.states import TaskStatus
from protocol.untrusted import decode

SPAWN_BYTES = 256 * 1024
"""Children's parameters one spawn request carries at most (several requests beyond)."""
_any = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()


class ChildFailed(Exception):
    """A child task failed for good (or was cancelled): raised in its parent where it waits."""

    def __init__(self, name: str, outcome: ChildOutcome) -> None:
        self.name, self.function = name, outcome.function
        self.status, self.error_type = outcome.status, outcome.error_type or "Error"
        self.error_message = outcome.message or ""
        super().__init__(f"child task {name} ({outcome.function}) {outcome.status.value}: "
                         f"{self.error_type}: {self.error_message}")


@dataclass(frozen=True, slots=True)
class Child:
    """A spawned child: pass it to ``ctx.gather`` for its output."""

    seq: int
    name: str
    function: str


class ChildAsker(Protocol):
    """How a task reaches the coordinator (the agent's connection), and waits for children
    (in the agent, which lends the task's slot meanwhile)."""

    def ask(self, body: Any, result_type: type[Any]) -> Any: ...

    async def aask(self, body: Any, result_type: type[Any]) -> Any: ...

    def wait_children(self, body: AwaitChildren) -> None: ...

    async def await_children(self, body: AwaitChildren) -> None: ...


class Spawner:
    """The children of one attempt of one task."""

    def __init__(self, run_id: str, parent: str, attempt: int, agent_id: str, queue: str,
                 asker: ChildAsker) -> None:
        self.run_id, self.parent, self.attempt = run_id, parent, attempt
        self.agent_id, self.queue, self._asker = agent_id, queue, asker
        self._next = 0
        self._unsent: list[ChildSpawn] = []
        self._unawaited: dict[int, Child] = {}
        self._asending = asyncio.Lock()
        self._sending = threading.Lock()
        """Held while children are sent (in an async task, or from a sync task's threads)."""

    # -- spawning (no I/O) ---------------------------------------------------------------

    def spawn(self, fn: Callable[..., Any], params: dict[str, Any]) -> Child:
        ref = registered_ref(fn)
        options = options_of(fn)
        spawn = ChildSpawn(seq=self._next, function=ref, queue=options.queue or self.queue,
                           params=_json_params(ref, params), retries=options.retries,
                           retry_delay_s=options.retry_delay, timeout_s=options.timeout)
        child = Child(self._next, child_name(self.parent, self._next), ref)
        self._next += 1
        self._unsent.append(spawn)
        self._unawaited[child.seq] = child
        return child

    def spawn_each(self, fn: Callable[..., Any], items: Iterable[Any],
                   common: dict[str, Any]) -> list[Child]:
        """One child per item: the item bound to ``item`` (and its index to ``map_index``)
        if the function has such parameters, else to its first parameter not in ``common``."""
        names = [n for n, p in signature_of(fn).parameters.items()
                 if not is_context(n, p.annotation) and n not in common
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not names:
            raise TypeError(f"ctx.map: {getattr(fn, '__qualname__', fn)!r} takes no parameter "
                            "for the item")
        key = "item" if "item" in names else names[0]
        with_index = "map_index" in names
        out = []
        for index, item in enumerate(items):
            params = {**common, key: item}
            if with_index:
                params["map_index"] = index
            out.append(self.spawn(fn, params))
        return out

    # -- sending and waiting -------------------------------------------------------------

    def _next_request(self) -> tuple[SpawnChildren, int]:
        """The first of the children not sent yet, as many as one request carries."""
        part: list[ChildSpawn] = []
        size = 0
        for spawn in self._unsent:
            cost = len(_enc.encode(spawn.params)) + 200
            if part and (len(part) >= MAX_SPAWN_AT_ONCE or size + cost > SPAWN_BYTES):
                break
            part.append(spawn)
            size += cost
        return SpawnChildren(run_id=self.run_id, parent=self.parent, attempt=self.attempt,
                             agent_id=self.agent_id, children=part), len(part)

    async def _asend(self) -> None:
        """Send the children spawned so far. A gather that comes meanwhile (``asyncio.gather``
        of two maps) waits until they are sent: its children may be in a request still to go
        — and one not sent stays to send (a child the coordinator does not know is not open)."""
        async with self._asending:
            while self._unsent:
                request, count = self._next_request()
                await self._asker.aask(request, Spawned)
                del self._unsent[:count]

    def _send(self) -> None:
        with self._sending:
            while self._unsent:
                request, count = self._next_request()
                self._asker.ask(request, Spawned)
                del self._unsent[:count]

    def _wait_bodies(self, children: Sequence[Child], fail_fast: bool) -> list[AwaitChildren]:
        ranges = ranges_of(c.seq for c in children)
        return [AwaitChildren(run_id=self.run_id, parent=self.parent, attempt=self.attempt,
                              agent_id=self.agent_id, ranges=ranges[i:i + MAX_RANGES],
                              fail_fast=fail_fast) for i in range(0, len(ranges), MAX_RANGES)]

    def _result_requests(self, children: Sequence[Child]) -> list[GetChildResults]:
        return [GetChildResults(run_id=self.run_id, parent=self.parent, after=first - 1,
                                upto=last) for first, last in ranges_of(c.seq for c in children)]

    async def agather(self, children: Sequence[Child], return_exceptions: bool) -> list[Any]:
        await self._asend()
        if not children:
            return []
        for body in self._wait_bodies(children, not return_exceptions):
            await self._asker.await_children(body)
        outcomes: dict[int, ChildOutcome] = {}
        for request in self._result_requests(children):
            while True:
                page = await self._asker.aask(request, ChildResults)
                request = self._take(page, request, outcomes)
                if request is None:
                    break
        return self._values(children, outcomes, return_exceptions)

    def gather(self, children: Sequence[Child], return_exceptions: bool) -> list[Any]:
        self._send()
        if not children:
            return []
        for body in self._wait_bodies(children, not return_exceptions):
            self._asker.wait_children(body)
        outcomes: dict[int, ChildOutcome] = {}
        for request in self._result_requests(children):
            while True:
                page = self._asker.ask(request, ChildResults)
                request = self._take(page, request, outcomes)
                if request is None:
                    break
        return self._values(children, outcomes, return_exceptions)

    @staticmethod
    def _take(page: ChildResults, request: GetChildResults,
              outcomes: dict[int, ChildOutcome]) -> GetChildResults | None:
        for outcome in page.outcomes:
            outcomes[outcome.seq] = outcome
        if not page.more or not page.outcomes:
            return None
        return msgspec.structs.replace(request, after=page.outcomes[-1].seq)

    def _values(self, children: Sequence[Child], outcomes: dict[int, ChildOutcome],
                return_exceptions: bool) -> list[Any]:
        out: list[Any] = []
        for child in children:
            self._unawaited.pop(child.seq, None)
            outcome = outcomes.get(child.seq)
            if outcome is None:  # open still: a sibling failed first (fail fast)
                out.append(None)
            elif outcome.status is TaskStatus.SUCCEEDED:
                out.append(decode(_any, bytes(outcome.output), f"the output of {child.name}"))
            else:
                out.append(ChildFailed(child.name, outcome))
        if not return_exceptions:
            failed = next((v for v in out if isinstance(v, ChildFailed)), None)
            if failed is not None:
                raise failed
        return out

    # -- when the task returns -----------------------------------------------------------

    @property
    def unsettled(self) -> bool:
        return bool(self._unawaited or self._unsent)

    async def asettle(self) -> None:
        """The children spawned and never awaited: the task ends after them."""
        await self.agather(list(self._unawaited.values()), return_exceptions=False)

    def settle(self) -> None:
        self.gather(list(self._unawaited.values()), return_exceptions=False)


def registered_ref(fn: Callable[..., Any]) -> str:
    """The function's ``module:qualname``, if agents know it (a flow's task function, or one
    decorated with ``@flowforge.task``); else a clear error."""
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"{getattr(fn, '__qualname__', fn)} is a generator; a child task "
                        "returns its output")
    ref = function_ref("(child tasks)", getattr(fn, "__name__", "?"), fn)
    if REGISTRY.functions.get(ref) is not fn:
        raise TypeError(f"{ref} is not a registered function: decorate it with "
                        "@flowforge.task (or make it a task of a flow) in a module the agents "
                        "import, so they can run it")
    return ref


def _json_params(ref: str, params: dict[str, Any]) -> dict[str, Any]:
    """Parameters travel as JSON: say which one cannot, here, rather than in the child."""
    try:
        _enc.encode(params)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"the parameters of child {ref} must be JSON values: {exc}") from None
    return params


def ranges_of(seqs: Iterable[int]) -> list[SeqRange]:
    """Spawn numbers as ranges of consecutive ones."""
    out: list[SeqRange] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out

