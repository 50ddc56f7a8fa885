"""``limited_fan`` (six tasks on queue gpu, at most two runs at once) registered on import, for
limits on real agent processes."""

from tests.limitflows import register_wide

MAX_ACTIVE_RUNS = 2
FLOW = register_wide(name="limited_fan", width=6, queue="gpu", max_active_runs=MAX_ACTIVE_RUNS)
