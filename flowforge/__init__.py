"""FlowForge SDK: define flows of Python tasks and run them over NATS."""

from flowforge.child_task import task
from flowforge.children import Child, ChildFailed
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.context import TaskContext
from flowforge.pipeline import Flow, register_task_pipeline
from flowforge.schedules import Schedule
from protocol.errors import (
    CycleError,
    DuplicateTask,
    FlowForgeError,
    FunctionNotImportable,
    InvalidFlow,
    InvalidOption,
    UnknownDependency,
)
from protocol.states import RunStatus, TaskStatus

__all__ = [
    "Child",
    "ChildFailed",
    "Client",
    "ConnectOptions",
    "CycleError",
    "DuplicateTask",
    "Flow",
    "FlowForgeError",
    "FunctionNotImportable",
    "InvalidFlow",
    "InvalidOption",
    "RunStatus",
    "Schedule",
    "TaskContext",
    "TaskStatus",
    "UnknownDependency",
    "register_task_pipeline",
    "task",
]
