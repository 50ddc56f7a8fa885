"""Run and task-instance states, and which of them are final."""

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    """Created, no task dispatched yet."""
    RUNNING = "running"
    """At least one task was dispatched and the run is not finished."""
    SUCCEEDED = "succeeded"
    """Every task succeeded."""
    FAILED = "failed"
    """Nothing more can run and at least one task failed."""
    CANCELLED = "cancelled"
    """Stopped on request."""


class TaskStatus(StrEnum):
    PENDING = "pending"
    """Waiting for its dependencies."""
    QUEUED = "queued"
    """Committed as ready and published on its queue."""
    RUNNING = "running"
    """An agent reported it started."""
    RETRY_WAIT = "retry_wait"
    """An attempt failed; waiting for the retry delay before the next attempt."""
    SUCCEEDED = "succeeded"
    """Finished and its output stored."""
    FAILED = "failed"
    """Its last attempt failed."""
    UPSTREAM_FAILED = "upstream_failed"
    """A task it depends on failed, so it will not run."""
    CANCELLED = "cancelled"
    """Its run was cancelled before it finished."""
    SKIPPED = "skipped"
    """Not run by a partial run (``--only``); its output, if any, comes from an earlier run."""


RUN_FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
TASK_FINAL = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED,
     TaskStatus.SKIPPED}
)
TASK_DONE_OK = frozenset({TaskStatus.SUCCEEDED, TaskStatus.SKIPPED})
"""States that let dependants run."""
TASK_NOT_OK = frozenset({TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED})
"""Final states that stop dependants; ``flowforge retry`` runs these again."""
