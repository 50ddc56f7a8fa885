"""``slow_fan`` (a mapped task over numbers, at most 4 instances at once) registered on
import, for mapped runs on real agent processes."""

from tests.mapflows import register_slow

MAX_ACTIVE = 4
FLOW = register_slow(max_active=MAX_ACTIVE)
