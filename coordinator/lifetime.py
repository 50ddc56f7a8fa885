"""A coordinator process's lifetime: start, serve, and after being cut off from NATS past its
lease, start again from the database by itself once NATS answers.

Being cut off (the host lost the network, or its NATS server lost the cluster's quorum) ends
the lease without anyone else taking it. The coordinator then stops acting at once — the
writer's fence refuses to commit — and drops everything it held in memory: what it had not
committed was never acknowledged on the bus and comes again. A fresh ``Coordinator`` waits
for JetStream for as long as it takes, takes the lease back, and resumes from SQLite like a
restarted process. If another coordinator took over meanwhile, it stops for good instead.
"""

import asyncio
import logging
import sys

from coordinator.active_lease import TRANSIENT, LeaseLost
from coordinator.service import Coordinator, CoordinatorConfig
from flowforge import runtime
from flowforge.metrics_http import MetricsAddressError, serving
from protocol.errors import NotConnected

log = logging.getLogger("flowforge.coordinator")


async def run_coordinator(config: CoordinatorConfig, url: str,
                          metrics: tuple[str, int] | None = None) -> int:
    """Serve until a stop signal (or NATS closed the connection for good); the exit code."""
    coordinator = Coordinator(config)
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        coordinator.request_stop()

    try:
        await coordinator.start()
    except NotConnected as exc:
        print(f"flowforge-coordinator: {exc}", file=sys.stderr)
        await coordinator.shutdown()
        return runtime.EXIT_NO_NATS
    runtime.install_stop_signals(stop)
    collector = coordinator.metrics_collector()
    try:
        async with serving(metrics, [collector]):
            while True:
                log.info("coordinator ready: db %s, NATS %s, namespace %r",
                         config.db_path, url, config.connect.namespace)
                if not await _serve(coordinator) or stopping.is_set():
                    break
                await coordinator.shutdown()
                again = await _start_again(config, stopping)
                if again is None:
                    break
                coordinator = again
                collector.stats = coordinator.stats
    except MetricsAddressError as exc:
        print(f"flowforge-coordinator: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    except LeaseLost as exc:
        log.error("%s", exc.message)
        return runtime.EXIT_FAILED
    finally:
        await coordinator.shutdown()
    return runtime.EXIT_NO_NATS if coordinator.lost_nats else runtime.EXIT_OK


async def _serve(coordinator: Coordinator) -> bool:
    """Serve; True when the lease ran out while cut off from NATS (start again), False at a
    stop. Raises LeaseLost when another coordinator took the lease."""
    try:
        await coordinator.run()
    except BaseExceptionGroup as group:
        lost, rest = group.split(LeaseLost)
        if rest is not None or lost is None or coordinator.lease is None:
            raise
        if coordinator.lease.taken:
            raise LeaseLost("another coordinator took over this namespace: stopping") from None
        log.error("cut off from NATS past the lease (%g s): stopped acting; what was not "
                  "committed comes again. Starting again from the database once NATS answers",
                  coordinator.config.active_lease_s)
        return True
    return False


async def _start_again(config: CoordinatorConfig,
                       stopping: asyncio.Event) -> Coordinator | None:
    """A fresh coordinator, started once NATS answers and JetStream can serve it (a node that
    just came back catches up first), tried again as long as it takes; None when a stop
    signal came first. Raises LeaseLost when another coordinator took over meanwhile."""
    while True:
        coordinator = Coordinator(config, resuming=True)
        starting = asyncio.ensure_future(coordinator.start())
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await coordinator.shutdown()
            return None
        try:
            starting.result()  # start() closed what it opened if it failed
        except TRANSIENT as exc:
            log.warning("JetStream cannot serve the coordinator yet (%r); trying again", exc)
            await asyncio.sleep(1.0)
            continue
        return coordinator
