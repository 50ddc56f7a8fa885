"""Console scripts run their service on uvloop, with the cycle collector tuned for a busy service."""

import asyncio
import gc
import importlib.util

from flowforge import runtime

INTERPRETER_YOUNG_THRESHOLD = 2000
"""The most allocations between young collections any supported CPython starts with (700 up to
3.12, 2000 since): the service's own setting must be well above it."""


def test_a_service_runs_with_the_collector_tuned_and_its_start_up_objects_frozen() -> None:
    saved = gc.get_threshold()
    gc.unfreeze()  # what an earlier test froze would look like this run's doing
    assert gc.get_freeze_count() == 0
    tracked_at_start = len(gc.get_objects())
    seen: dict[str, object] = {}

    async def main() -> int:
        seen["threshold"], seen["frozen"] = gc.get_threshold(), gc.get_freeze_count()
        seen["loop"] = type(asyncio.get_running_loop()).__module__
        return 7

    try:
        assert runtime.run(main()) == 7
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()

    threshold = seen["threshold"]
    assert isinstance(threshold, tuple) and threshold != saved
    young, middle, old = threshold
    assert young >= 5 * INTERPRETER_YOUNG_THRESHOLD  # "every 10,000 allocations, not every 700"
    assert middle >= saved[1] and old >= saved[2]  # the older ones are not collected more often
    assert isinstance(seen["frozen"], int)
    assert seen["frozen"] >= 0.9 * tracked_at_start  # what existed at start is never scanned again
    if importlib.util.find_spec("uvloop") is not None:
        assert str(seen["loop"]).startswith("uvloop")
