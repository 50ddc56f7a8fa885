"""The Celery + Redis side of the benchmark runs end to end at tiny sizes (real redis-server, one
real ``celery worker``); skipped where redis-server or Celery is missing."""

from pathlib import Path

import pytest

from bench import celery_side
from bench.celery_side import CeleryStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def test_every_celery_sample_reports_positive_rates(tmp_path: Path) -> None:
    reason = celery_side.redis_available()
    if reason is not None:
        pytest.skip(f"Celery side unavailable: {reason}")
    expected = {
        "wide": (celery_side.wide, (20,), ("wall_s", "tasks", "tasks_per_s")),
        "fanout": (celery_side.fanout, (20,), ("wall_s", "tasks", "tasks_per_s")),
        "singles": (celery_side.singles, (20,), ("wall_s", "tasks", "tasks_per_s", "runs_per_s")),
        "chain": (celery_side.chain, (10,), ("wall_s", "tasks", "ms_per_hop")),
        "latency": (celery_side.dispatch_latency, (20,), ("wall_s", "p50_ms", "p99_ms")),
    }
    async with CeleryStack(tmp_path, workers=1, concurrency=2) as stack:
        for name, (sample, args, keys) in expected.items():
            result = await stack.run(sample, stack, *args)
            for key in keys:
                assert result.get(key, 0) > 0, f"{name}: {key} missing or not positive in {result}"
        memory = stack.memory()
    assert memory["redis-server"]["peak_rss_kib"] > 0
    assert memory["worker0"]["peak_rss_kib"] > 0
    assert stack.stopped["worker_exit_codes"] == [0]
    assert stack.redis is not None and stack.redis.popen.poll() is not None


async def test_celery_parents_waiting_on_groups_finish_below_the_slots_and_deadlock_above(
    tmp_path: Path,
) -> None:
    reason = celery_side.redis_available()
    if reason is not None:
        pytest.skip(f"Celery side unavailable: {reason}")
    from bench.children import celery_parents

    async with CeleryStack(tmp_path, workers=1, concurrency=2) as stack:
        few = await stack.run(celery_parents, stack, 1, 3, 30.0)
        assert few["parents_done"] == 1 and not few["deadlocked"] and few["children_per_s"] > 0
        many = await stack.run(celery_parents, stack, 6, 3, 3.0)  # both processes hold parents
    assert many["deadlocked"] and many["parents_done"] < 6 and "children_per_s" not in many
