"""Error codes on the wire and the FlowForgeError tree that carries them."""

from collections.abc import Sequence
from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    """The message could not be decoded or has a field of the wrong type."""
    INVALID_FLOW = "invalid_flow"
    """A flow definition failed validation."""
    FLOW_EXISTS = "flow_exists"
    """The flow exists with another definition and replacing was not asked for."""
    UNKNOWN_FLOW = "unknown_flow"
    """No flow of that name is registered."""
    UNKNOWN_RUN = "unknown_run"
    """No run of that id exists."""
    INVALID_PARAMS = "invalid_params"
    """Run parameters are missing or of the wrong type."""
    TOO_LARGE = "too_large"
    """A message or value is over its size limit."""
    INVALID_STATE = "invalid_state"
    """The request does not fit the current state (e.g. cancelling a finished run)."""
    UNKNOWN_SCHEDULE = "unknown_schedule"
    """No schedule of that name exists."""
    UNKNOWN_BATCH = "unknown_batch"
    """No batch of that id or name exists."""
    UNKNOWN_INSTANCE = "unknown_instance"
    """A mapped task has no instance of that index (none was made, or the list is shorter)."""
    LIMIT_REACHED = "limit_reached"
    """A configured limit would be passed (children per run, how deep children nest)."""
    BUSY = "busy"
    """The coordinator has too many requests in hand; try again shortly."""
    INTERNAL = "internal"
    """A bug in FlowForge; the message says where."""


class FlowForgeError(Exception):
    """Root of every error FlowForge raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidFlow(FlowForgeError):
    """A flow definition is not valid; the message names the flow and the offender."""

    code = ErrorCode.INVALID_FLOW


class UnknownDependency(InvalidFlow):
    def __init__(self, flow: str, task: str, missing: str) -> None:
        self.flow, self.task, self.missing = flow, task, missing
        super().__init__(
            f"flow {flow!r}: task {task!r} depends on {missing!r}, which is not a task of "
            f"this flow; define {missing!r} in the pipeline or remove it from depends_on"
        )


class CycleError(InvalidFlow):
    def __init__(self, flow: str, path: Sequence[str]) -> None:
        self.flow, self.path = flow, tuple(path)
        super().__init__(f"flow {flow!r} has a dependency cycle: {' -> '.join(path)}")


class DuplicateTask(InvalidFlow):
    def __init__(self, flow: str, task: str) -> None:
        self.flow, self.task = flow, task
        super().__init__(f"flow {flow!r}: task {task!r} is defined twice")


class FunctionNotImportable(InvalidFlow):
    def __init__(self, flow: str, task: str, reason: str) -> None:
        self.flow, self.task, self.reason = flow, task, reason
        super().__init__(f"flow {flow!r}: task {task!r}: {reason}")


class InvalidOption(InvalidFlow):
    def __init__(self, flow: str, task: str | None, option: str, reason: str) -> None:
        self.flow, self.task, self.option = flow, task, option
        where = f"task {task!r} option {option!r}" if task else f"option {option!r}"
        super().__init__(f"flow {flow!r}: {where}: {reason}")


class FlowExists(FlowForgeError):
    code = ErrorCode.FLOW_EXISTS


class UnknownFlow(FlowForgeError):
    code = ErrorCode.UNKNOWN_FLOW

    def __init__(self, flow: str) -> None:
        self.flow = flow
        super().__init__(f"no flow named {flow!r} is registered")


class UnknownRun(FlowForgeError):
    code = ErrorCode.UNKNOWN_RUN

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}")


class UnknownSchedule(FlowForgeError):
    code = ErrorCode.UNKNOWN_SCHEDULE

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}; `flowforge schedule list` shows them")


class UnknownBatch(FlowForgeError):
    code = ErrorCode.UNKNOWN_BATCH

    def __init__(self, ref: str) -> None:
        super().__init__(f"no batch with id or name {ref!r}; `flowforge batch list` shows them")


class UnknownInstance(FlowForgeError):
    code = ErrorCode.UNKNOWN_INSTANCE


class InvalidParams(FlowForgeError):
    code = ErrorCode.INVALID_PARAMS


class BadRequest(FlowForgeError):
    code = ErrorCode.BAD_REQUEST


class TooLarge(FlowForgeError):
    code = ErrorCode.TOO_LARGE


class InvalidState(FlowForgeError):
    code = ErrorCode.INVALID_STATE


class LimitReached(FlowForgeError):
    code = ErrorCode.LIMIT_REACHED


class RemoteError(FlowForgeError):
    """An error reply from the coordinator, with its code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        try:
            self.code = ErrorCode(code)
        except ValueError:
            self.code = ErrorCode.INTERNAL


class NotConnected(FlowForgeError):
    """NATS or the coordinator cannot be reached."""


class NotAuthorized(NotConnected):
    """NATS refused the login (wrong or missing credentials)."""


class NotHolder(FlowForgeError):
    """A report about a task attempt that another agent holds."""

    code = ErrorCode.INVALID_STATE
