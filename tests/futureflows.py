"""A module with postponed annotations: ctx must still be recognised by its annotation."""

from __future__ import annotations

from flowforge import TaskContext


def step(context: TaskContext, n: int = 2) -> int:
    return n * 2
