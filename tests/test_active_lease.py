"""The coordinator lease against a real NATS KV bucket, at its races: taking over from a dead
holder whose entry changed between reading and deleting it is no error, only a next try."""

from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS

from coordinator.active_lease import KEY, ActiveLease, Holder


async def test_taking_from_a_holder_whose_entry_changed_meanwhile_is_a_next_try(
    nc: NATS, tmp_path: Path
) -> None:
    lease = ActiveLease(nc, "FF_TEST_LEASE", tmp_path / "ff.db", ttl_s=30)
    lease._kv = await lease._bucket()
    dead = Holder(host="elsewhere", pid=1, database=str(tmp_path / "ff.db"), since=0.0)
    first = await lease._kv.put(KEY, msgspec.json.encode(dead))
    stale = await lease._kv.get(KEY)
    await lease._kv.update(KEY, msgspec.json.encode(dead), last=first)  # changed meanwhile

    async def read_before_the_change(key: str) -> object:
        return stale

    lease._kv.get = read_before_the_change  # type: ignore[method-assign, assignment]
    await lease._take_from(dead)  # the delete is refused: wrong last sequence, no raise
    lease._kv.get = type(lease._kv).get.__get__(lease._kv)  # type: ignore[method-assign]
    assert (await lease._kv.get(KEY)).revision == first + 1  # still there: the next try says
