"""A one-task flow registered on import, for schedules fired by real processes."""

from tests.inputflows import register_noop

FLOW = register_noop("tick")
