"""``slow_fan`` without a window (numbers → slow_item mapped), registered on import, for agent
processes on a NATS cluster."""

from tests.mapflows import register_slow

FLOW = register_slow()
