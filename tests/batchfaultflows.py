"""``slow_square`` registered on import, for batches run by real agent processes."""

from tests.batchflows import register_slow_square

FLOW = register_slow_square()
