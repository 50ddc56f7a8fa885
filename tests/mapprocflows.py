"""``big_join`` (a join reading its mapped outputs a page at a time) registered on import, for
an agent with ``--pool process``."""

from tests.mapflows import register_big_join

FLOW = register_big_join("sync")
