"""Judging what comes in before the scheduler sees it: who sent a report and whether it may,
what a trigger's subject and idempotency key say, which tasks a debug run names."""

from typing import Any

import msgspec
from nats.aio.msg import Msg

from coordinator.graph import CompiledFlow
from coordinator.scheduler import Scheduler
from flowforge.auth import Identity
from protocol.errors import BadRequest, NotHolder, TooLarge
from protocol.fields import Key
from protocol.limits import MAX_KEY_CHARS, MAX_PARAMS_BYTES, MAX_VALUE_DEPTH
from protocol.messages import AttemptReport, TaskFailed, TaskLog, TaskSucceeded, encoder
from protocol.records import TaskRecord
from protocol.states import TaskStatus
from protocol.subjects import agent_id_fits
from protocol.untrusted import Malformed, check_depth, json_depth_over


class ReportChecks:
    """May this report be applied? Raises a FlowForgeError saying why not."""

    def __init__(self, scheduler: Scheduler, report_prefix: str,
                 agent_identities: dict[str, Identity]) -> None:
        self.scheduler = scheduler
        self._report_prefix = report_prefix
        self.agent_identities = agent_identities
        """Under authorization, each agent identity: the queues and agent id it is bound to."""

    def sender(self, subject: str) -> str | None:
        """The identity a report's subject carries (``<ns>.report.<identity>.<run>``), or None
        on an open bus (``<ns>.report.<run>``)."""
        parts = subject[len(self._report_prefix):].split(".")
        if len(parts) > 2:
            raise Malformed("a report's subject is <namespace>.report.[<identity>.]<run_id>")
        return parts[0] if len(parts) == 2 else None

    def check_sender(self, report: AttemptReport | TaskLog, sender: str | None) -> None:
        """Under authorization an agent reports for itself: the server holds it to its
        identity in the subject, and this holds the report's agent id and task's queue to it."""
        if sender is None:
            return
        who = self.agent_identities.get(sender)
        claimed = report.agent_id
        longer = [i for i in self.agent_identities if len(i) > len(sender) and agent_id_fits(i, claimed)]
        if (not agent_id_fits(sender, claimed) or longer
                or (who is not None and who.agent_id is not None and claimed != who.agent_id)):
            raise NotHolder(f"identity {sender} sent a report as agent {claimed}, which is not "
                            "one of its agents")
        rec = self.scheduler.task_record(report.run_id, report.task)
        queue = rec.queue if rec is not None else None
        if who is not None and who.queues is not None and queue is not None \
                and queue not in who.queues:
            raise NotHolder(f"identity {sender} may not report on queue {queue} "
                            f"({report.run_id}/{report.task}); it serves {', '.join(who.queues)}")

    def check_result(self, report: Any) -> Any:
        """The report to apply (or a FlowForgeError why none): a success whose output nests
        too deep is its attempt's failure instead (agents check before sending; some did not,
        and a task whose report is only refused would wait for ever)."""
        self.check_holder(report)
        if isinstance(report, TaskSucceeded) and json_depth_over(bytes(report.output),
                                                                 MAX_VALUE_DEPTH):
            return TaskFailed(
                run_id=report.run_id, task=report.task, attempt=report.attempt,
                agent_id=report.agent_id, delivery=report.delivery, at=report.at,
                started_at=report.started_at, error_type="OutputError",
                message=f"its output nests lists and dicts more than {MAX_VALUE_DEPTH} levels deep")
        return report

    def check_holder(self, report: AttemptReport | TaskLog) -> None:
        holder = holder_other_than(self.scheduler.task_record(report.run_id, report.task),
                                   report.attempt, report.agent_id)
        if holder is not None:
            raise NotHolder(f"a report on attempt {report.attempt} of {report.run_id}/"
                            f"{report.task} from agent {report.agent_id}, but agent {holder} "
                            "holds it")


def holder_other_than(rec: TaskRecord | None, attempt: int, agent_id: str) -> str | None:
    """The agent that holds this attempt when it is not ``agent_id`` (a report about it
    from anyone else is refused); None when the report may be applied.

    A later attempt is not refused: a redelivery to another agent after the holder
    vanished is one, and the coordinator cannot tell it from a forged one (it does not
    see lease extensions; a killed agent still looks live for a while)."""
    if rec is None or rec.status is not TaskStatus.RUNNING or rec.attempt != attempt:
        return None
    return rec.agent_id if rec.agent_id not in (None, agent_id) else None


def scoped_key(scope: str | None, key: str | None) -> str | None:
    """An idempotency key as stored: under authorization each identity has keys of its own,
    so no client can claim another's key before it."""
    return f"{scope}/{key}" if scope and key else key


def flow_and_scope(rest: str) -> tuple[str, str | None]:
    """``<flow>`` or ``<flow>.<identity>``: what follows ``<ns>.trigger.``."""
    parts = rest.split(".")
    if len(parts) > 2:
        raise Malformed("a trigger's subject is <namespace>.trigger.<flow>[.<identity>]")
    return parts[0], parts[1] if len(parts) == 2 else None


def checked_key(key: str) -> str:
    """A ``Nats-Msg-Id`` used as an idempotency key: held to the same rules as the field."""
    try:
        return msgspec.convert(key, Key)
    except msgspec.ValidationError:
        raise Malformed(
            f"the Nats-Msg-Id header is not a usable idempotency key: it must be 1 to "
            f"{MAX_KEY_CHARS} printable characters"
        ) from None


def kind_of(subject: str) -> str:
    """``report`` of ``<ns>.report.<run>``: which kind of message a subject carries."""
    parts = subject.split(".", 2)
    return parts[1] if len(parts) > 1 and parts[1].isidentifier() else "message"


def check_run_params(params: dict[str, Any], where: str = "") -> None:
    """Run parameters held to a run's limits: their JSON size and nesting depth."""
    params_json = encoder.encode(params)
    if len(params_json) > MAX_PARAMS_BYTES:
        raise TooLarge(f"{where}parameters are over {MAX_PARAMS_BYTES} bytes; pass a reference "
                       "(a path or a key) instead of the data")
    check_depth(params_json, f"{where or 'the '}parameters", MAX_VALUE_DEPTH)


def check_only(flow_name: str, flow: CompiledFlow, only: list[str] | None) -> frozenset[str] | None:
    if only is None:
        return None
    unknown = [t for t in only if t not in flow.tasks]
    if unknown or not only:
        raise BadRequest(
            f"flow {flow_name!r} has no task {', '.join(map(repr, unknown))}; it has "
            f"{', '.join(flow.tasks)}" if unknown else "--only names no task"
        )
    return frozenset(only)


def redelivery_key(msg: Msg) -> str:
    """Same for every delivery of one stored trigger, different for any other trigger.

    The stream sequence alone repeats when the stream is recreated (a NATS server whose
    JetStream store was lost, with the SQLite file kept), which would make new triggers
    look like old ones; the message's stored timestamp tells them apart.
    """
    meta = msg.metadata
    return f"trigger:{meta.sequence.stream}:{meta.timestamp.timestamp():.6f}"
