"""A dry run's count of the items that would run, past the 1,000 reasons a chunk's answer shows."""

import pytest

from flowforge.client import Client
from tests import batchflows


@pytest.mark.xfail(strict=True, reason=(
    "client bug: BatchCalls._plan counts to_run as len(items) - len(skipped), but the "
    "coordinator sends at most 1,000 skip reasons per chunk (batches_api._added), so every "
    "skipped item past the 1,000th of a chunk is counted as one that would run"))
async def test_a_dry_run_counts_every_skipped_item_not_only_the_reasons_it_shows(
    coordinator, start_agent, client: Client
) -> None:
    flow = batchflows.register_square()
    await start_agent()
    await client.register([flow])
    items = [{"x": i} for i in range(1_001)]  # one chunk, one more than the reasons shown
    first = await client.submit_batch("square", items)
    assert first.batch is not None and first.to_run == 1_001
    done = await client.wait_batch(first.batch.batch_id, timeout_s=60)
    assert done.counts == {"succeeded": 1_001}
    again = await client.submit_batch("square", items)
    assert again.to_run == 0  # a real submit counts right: the coordinator's `added`
    plan = await client.submit_batch("square", items, dry_run=True)
    assert plan.to_run == 0
