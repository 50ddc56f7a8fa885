"""The three partition scenarios (see ``tests/partitions.py``); each returns its Outcome.

agent-cut-off        agent a1's host is cut off while it runs tasks, for longer than the
                     lease: its tasks run again on a2; once healed, a1's late reports reach
                     the coordinator and are ignored as stale attempts. Recovery: from the cut
                     until the first of a1's tasks runs on a2.
coordinator-cut-off  the coordinator shares host n1 with a nats node; the host is cut off from
                     the other two (the majority). The coordinator stops acting at its lease
                     (nothing is committed while cut off, though the agents go on and their
                     reports pile up on the majority), and when healed starts again by itself
                     from the database. Recovery: from the heal until the database moves on.
node-cut-off         the host of the nats node the coordinator is connected to is cut off:
                     every client on it moves to the other nodes and the run finishes while
                     the node is still away. Recovery: from the cut until every client is on
                     another node and the database moves on.
"""

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.msg import Msg

from flowforge.connection import connect
from protocol.subjects import Subjects
from tests.partitions import Outcome, Stage, until

Scenario = Callable[[Path], Awaitable[Outcome]]


def _on(stage: Stage, agent: str) -> set[int]:
    return {r[0] for r in stage.rows() if r[1] == "running" and r[2] == agent}


async def agent_cut_off(root: Path, n: int = 24, hold_s: float = 1.5) -> Outcome:
    out = Outcome("agent-cut-off", n)
    async with Stage(root) as st:
        watch = [p for p in (st.coordinator, st.agents["a2"]) if p is not None]
        late: list[float] = []
        healed_at = [float("inf")]

        def on_report(msg: Msg) -> None:
            if b'"agent_id":"a1"' in msg.data and time.monotonic() >= healed_at[0]:
                late.append(time.monotonic())

        nc = await connect(st.options(), name="test-listener")
        try:
            await nc.subscribe(Subjects().wildcard("report"), cb=_async(on_report))
            run_id = await st.start_run(n, hold_s)
            await until(lambda: bool(_on(st, "a1")), 60, "a task running on a1", watch)
            held = _on(st, "a1")
            cut = time.monotonic()
            st.net.cut("a1")
            moved = await until(lambda: any(r[2] == "a2" for r in st.rows() if r[0] in held),
                                60, "a task of a1 to run on a2", watch)
            out.recovery_s = moved - cut
            await until(lambda: all(r[2] == "a2" for r in st.rows() if r[0] in held), 60,
                        "every task of a1 to run on a2", watch)
            healed_at[0] = time.monotonic()
            st.net.heal("a1")
            out.facts |= {"a1 held": len(held), "cut for": f"{healed_at[0] - cut:.1f} s"}
            await until(lambda: bool(late), 60, "a1's late reports", watch)
            await st.finish(run_id, out)
        finally:
            await nc.close()
        rows = {r[0]: r for r in st.rows()}
        out.facts["late reports from a1"] = len(late)
        taken_by_a1 = [i for i in held if rows[i][2] != "a2"]
        if taken_by_a1 and out.error is None:
            out.error = f"late reports of a1 were taken for items {sorted(taken_by_a1)}"
    return out


def _async(fn: Callable[[Msg], None]) -> Callable[[Msg], Awaitable[None]]:
    async def cb(msg: Msg) -> None:
        fn(msg)

    return cb


async def coordinator_cut_off(root: Path, n: int = 48, hold_s: float = 0.4) -> Outcome:
    out = Outcome("coordinator-cut-off", n)
    async with Stage(root, coordinator_host="n1", active_lease_s=6.0) as st:  # cut off: stop soon
        coordinator = st.coordinator
        assert coordinator is not None
        watch = [coordinator, *st.agents.values()]
        run_id = await st.start_run(n, hold_s)
        await until(lambda: st.succeeded() >= n // 4, 60, "a quarter of the items", watch)
        cut, ended_at_cut = time.monotonic(), st.ended()
        st.net.cut("n1")
        fenced = await until(lambda: "cut off from NATS past the lease" in coordinator.log(),
                             60, "the coordinator to stop acting", watch)
        before, ended = st.fingerprint(run_id), st.ended()
        await until(lambda: st.ended() >= min(n, ended + 4), 60,
                    "the agents to finish more items on the majority", watch)
        unchanged = st.fingerprint(run_id) == before
        healed = time.monotonic()
        st.net.heal("n1")
        done = st.succeeded()
        moved = await until(lambda: st.succeeded() > done or st.run_status(run_id) == "succeeded",
                            90, "the coordinator to commit again", watch)
        out.recovery_s = moved - healed
        out.facts |= {"stopped acting after": f"{fenced - cut:.1f} s",
                      "items the agents finished while cut off": st.ended() - ended_at_cut,
                      "commits while cut off": 0 if unchanged else "some"}
        await st.finish(run_id, out)
        out.facts["restarts"] = coordinator.log().count("Starting again from the database")
        if not unchanged and out.error is None:
            out.error = "the coordinator committed while cut off from the majority"
    return out


async def node_cut_off(root: Path, n: int = 48, hold_s: float = 0.3) -> Outcome:
    out = Outcome("node-cut-off", n)
    async with Stage(root) as st:
        watch = [p for p in (st.coordinator, *st.agents.values()) if p is not None]
        run_id = await st.start_run(n, hold_s)
        await until(lambda: st.succeeded() >= n // 4, 60, "a quarter of the items", watch)
        victim = await _coordinators_node(st)
        others = [name for name in st.cluster.names if name != victim]
        cut = time.monotonic()
        st.net.cut(victim)

        async def everyone_elsewhere() -> bool:
            names = [c for o in others for c in await st.cluster.connections(o)]
            return (names.count("flowforge-coordinator") == 1
                    and sum(c.startswith("flowforge-agent") for c in names) == 2)

        await until(everyone_elsewhere, 60, "every client to move to another node", watch)
        done = st.succeeded()
        moved = await until(lambda: st.succeeded() > done or st.run_status(run_id) == "succeeded",
                            60, "the run to move on", watch)
        out.recovery_s = moved - cut
        await st.finish(run_id, out)  # while the node is still cut off
        out.facts |= {"cut": victim, "finished without it": True,
                      "coordinator restarts": st.coordinator.log().count(  # type: ignore[union-attr]
                          "Starting again from the database")}
        st.net.heal(victim)
    return out


async def _coordinators_node(st: Stage) -> str:
    for name in st.cluster.names:
        if "flowforge-coordinator" in await st.cluster.connections(name):
            return name
    raise AssertionError("the coordinator is connected to no node")


SCENARIOS: dict[str, Scenario] = {
    "agent-cut-off": agent_cut_off,
    "coordinator-cut-off": coordinator_cut_off,
    "node-cut-off": node_cut_off,
}
