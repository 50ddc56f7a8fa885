"""Console scripts run their service with the cycle collector tuned for a busy service."""

import gc

from flowforge import runtime


def test_a_service_runs_with_the_collector_tuned_and_its_start_up_objects_frozen() -> None:
    saved = gc.get_threshold()
    seen: dict[str, object] = {}

    async def main() -> int:
        seen["threshold"], seen["frozen"] = gc.get_threshold(), gc.get_freeze_count()
        return 7

    try:
        assert runtime.run(main()) == 7
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
    assert seen["threshold"] == runtime.GC_THRESHOLD
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 0
