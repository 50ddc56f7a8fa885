"""CPU seconds per component of a sample: FlowForge's processes, Celery's, and this process."""

import time
from dataclasses import dataclass

from bench.celery_side import CeleryStack
from bench.stack import Stack, child_pids, cpu_seconds


def celery_cpu(stack: CeleryStack) -> dict[str, float]:
    """CPU seconds so far of redis-server and of each worker with its pool processes."""
    out: dict[str, float] = {}
    if stack.redis is not None:
        out["redis-server"] = cpu_seconds(stack.redis.popen.pid) or 0.0
    for proc in stack.worker_procs:
        pids = [proc.popen.pid, *child_pids(proc.popen.pid)]
        out[proc.name] = sum(cpu_seconds(pid) or 0.0 for pid in pids)
    return out


def _spent(before: dict[str, float], after: dict[str, float], prefix: str) -> float:
    return sum(after[k] - before.get(k, 0.0) for k in after if k.startswith(prefix))


@dataclass(slots=True)
class CpuMeter:
    """``meter = CpuMeter.start(stack)`` before a sample, ``meter.fields()`` after it.

    The fields are flat numbers (so ``report.medians`` takes them): for FlowForge
    ``cpu_coordinator_s``, ``cpu_nats_s``, ``cpu_agents_s`` (all agents), for Celery
    ``cpu_workers_s`` (workers and their pool processes), ``cpu_redis_s``; for both
    ``cpu_bench_s`` (this process: the client, every thread) and ``cpu_total_s``.
    A process that exited during the sample is left out.
    """

    stack: Stack | CeleryStack
    before: dict[str, float]
    bench_before: float

    @classmethod
    def start(cls, stack: Stack | CeleryStack) -> "CpuMeter":
        return cls(stack, cls._read(stack), time.process_time())

    @staticmethod
    def _read(stack: Stack | CeleryStack) -> dict[str, float]:
        return stack.cpu() if isinstance(stack, Stack) else celery_cpu(stack)

    def fields(self) -> dict[str, float]:
        after = self._read(self.stack)
        if isinstance(self.stack, Stack):
            out = {"cpu_coordinator_s": _spent(self.before, after, "coordinator"),
                   "cpu_nats_s": _spent(self.before, after, "nats-server"),
                   "cpu_agents_s": _spent(self.before, after, "agent")}
        else:
            out = {"cpu_workers_s": _spent(self.before, after, "worker"),
                   "cpu_redis_s": _spent(self.before, after, "redis-server")}
        out["cpu_bench_s"] = time.process_time() - self.bench_before
        out["cpu_total_s"] = sum(out.values())
        return out
