"""Every NATS subject and stream name, built from one namespace."""

import re
from dataclasses import dataclass

from protocol.limits import NAMESPACE_RE

IDENTITY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

DEFAULT_NAMESPACE = "flowforge"


def agent_id_fits(identity: str, agent_id: str) -> bool:
    """Whether an agent logged in as ``identity`` may go by ``agent_id``: the identity itself,
    or a name that starts with it and a '-' (what agents under an identity are named)."""
    return agent_id == identity or agent_id.startswith(f"{identity}-")


def task_msg_id(run_id: str, task: str, attempt: int) -> str:
    """The ``Nats-Msg-Id`` of the task message of one attempt: JetStream keeps one message
    per id, so publishing an attempt again (after a crash, or a failed publish) sends nothing
    twice."""
    return f"{run_id}.{task}.{attempt}"


API_QUEUE_GROUP = "flowforge-coordinator"


@dataclass(frozen=True, slots=True)
class Subjects:
    """Subject and stream names for one namespace (default ``flowforge``)."""

    namespace: str = DEFAULT_NAMESPACE
    identity: str | None = None
    """Who this client is under NATS authorization (``flowforge auth init`` names one per
    role): its API requests and triggers carry it as their last token, which the server's
    permissions hold it to, and its idempotency keys are its own."""

    def __post_init__(self) -> None:
        if not NAMESPACE_RE.match(self.namespace):
            raise ValueError(
                f"namespace {self.namespace!r} is not valid: use 1-32 lowercase letters, "
                "digits, '_' or '-', starting with a letter"
            )
        if self.identity is not None and not IDENTITY_RE.match(self.identity):
            raise ValueError(
                f"identity {self.identity!r} is not valid: use 1-64 letters, digits, '_' or '-'"
            )

    @property
    def inbox_prefix(self) -> str:
        """Where answers to this client go: its own, under authorization (no other client
        may subscribe there)."""
        return f"_INBOX_{self.identity}" if self.identity else "_INBOX"

    # JetStream streams
    @property
    def tasks_stream(self) -> str:
        return f"{self._stream_prefix}_TASKS"

    @property
    def reports_stream(self) -> str:
        return f"{self._stream_prefix}_REPORTS"

    @property
    def triggers_stream(self) -> str:
        return f"{self._stream_prefix}_TRIGGERS"

    @property
    def lease_bucket(self) -> str:
        """The KV bucket whose key says which coordinator is active on this namespace."""
        return f"{self._stream_prefix}_COORDINATOR"

    @property
    def _stream_prefix(self) -> str:
        return self.namespace.upper().replace("-", "_")

    def task_consumer(self, queue: str) -> str:
        return f"tasks_{queue}"

    reports_consumer = "coordinator_reports"
    triggers_consumer = "coordinator_triggers"

    # subjects
    def task(self, queue: str) -> str:
        return f"{self.namespace}.task.{queue}"

    def report(self, run_id: str) -> str:
        """``<ns>.report.[<identity>.]<run_id>``: under authorization an agent's reports carry
        its identity, which the server's permissions hold it to."""
        if self.identity:
            return f"{self.namespace}.report.{self.identity}.{run_id}"
        return f"{self.namespace}.report.{run_id}"

    @property
    def report_several(self) -> str:
        """Where results of tasks of several runs go together (no run id is ``several``)."""
        return self.report("several")

    @property
    def report_prefix(self) -> str:
        return f"{self.namespace}.report."

    def trigger(self, flow: str) -> str:
        return self._scoped(f"{self.namespace}.trigger.{flow}")

    @property
    def trigger_prefix(self) -> str:
        """``<ns>.trigger.``: a trigger's subject is this, its flow and maybe an identity."""
        return f"{self.namespace}.trigger."

    def api(self, noun: str, verb: str) -> str:
        return self._scoped(f"{self.namespace}.api.{noun}.{verb}")

    def _scoped(self, subject: str) -> str:
        return f"{subject}.{self.identity}" if self.identity else subject

    def cancel(self, run_id: str) -> str:
        return f"{self.namespace}.cancel.{run_id}"

    def wake(self, agent_id: str) -> str:
        """Where the coordinator tells an agent that a task's children it waits for ended."""
        return f"{self.namespace}.wake.{agent_id}"

    def heartbeat(self, agent_id: str) -> str:
        return f"{self.namespace}.agent.heartbeat.{agent_id}"

    def run_event(self, flow: str, run_id: str) -> str:
        return f"{self.namespace}.events.run.{flow}.{run_id}"

    def task_events(self, run_id: str) -> str:
        """Where the changed tasks of a run go, several to a message (``TaskEvents``)."""
        return f"{self.namespace}.events.tasks.{run_id}"

    def log_event(self, run_id: str, task: str) -> str:
        return f"{self.namespace}.events.log.{run_id}.{task}"

    def flow_event(self, flow: str) -> str:
        return f"{self.namespace}.events.flow.{flow}"

    def error_event(self, kind: str) -> str:
        return f"{self.namespace}.events.error.{kind}"

    def schedule_event(self, name: str) -> str:
        return f"{self.namespace}.events.schedule.{name}"

    def batch_event(self, batch_id: str) -> str:
        return f"{self.namespace}.events.batch.{batch_id}"

    def agent_event(self, agent_id: str) -> str:
        return f"{self.namespace}.events.agent.{agent_id}"

    def wildcard(self, kind: str) -> str:
        """``<ns>.<kind>.>``, e.g. ``wildcard('task')`` for the tasks stream."""
        return f"{self.namespace}.{kind}.>"
