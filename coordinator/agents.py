"""The agents the coordinator has heard from: live, lost or stopped, and what they serve."""

import time

from protocol.limits import MAX_AGENTS_KEPT
from protocol.messages import AgentHeartbeat
from protocol.records import AgentInfo

LIVE, LOST, STOPPED = "live", "lost", "stopped"
FORGET_AFTER_S = 600.0


class AgentRegistry:
    """Heartbeats in, agent states out; an agent silent for ``lost_after_s`` is lost."""

    def __init__(self, lost_after_s: float = 15.0, max_agents: int = MAX_AGENTS_KEPT) -> None:
        self.lost_after_s = lost_after_s
        self.max_agents = max_agents
        self.agents: dict[str, AgentInfo] = {}
        self.first_beat_at: float | None = None
        """An agent not heard from yet may be running tasks until lost_after_s after the first
        heartbeat this coordinator heard (it learns its agents from their next beats)."""
        self.lost_total = 0
        """Agents found lost since start (one found again and lost again counts twice)."""

    def _forget_one_gone(self) -> bool:
        """Make room by forgetting the agent gone longest; False when every one is live."""
        gone = [a for a in self.agents.values() if a.status != LIVE]
        if not gone:
            return False
        del self.agents[min(gone, key=lambda a: a.last_seen).agent_id]
        return True

    def beat(self, hb: AgentHeartbeat, now: float) -> AgentInfo | None:
        """Record a heartbeat; None when it is a new agent and there is no room for it."""
        if self.first_beat_at is None:
            self.first_beat_at = now
        full = hb.agent_id not in self.agents and len(self.agents) >= self.max_agents
        if full and not self._forget_one_gone():
            return None
        info = AgentInfo(
            agent_id=hb.agent_id, host=hb.host, pid=hb.pid, queues=hb.queues,
            functions=hb.functions, slots_total=hb.slots_total, slots_busy=hb.slots_busy,
            started_at=hb.started_at, last_seen=now, status=STOPPED if hb.stopping else LIVE,
        )
        self.agents[hb.agent_id] = info
        return info

    def sweep(self, now: float) -> list[AgentInfo]:
        """Mark silent agents lost and forget long-gone ones; returns those that changed."""
        changed = []
        for agent_id, info in list(self.agents.items()):
            silent_s = now - info.last_seen
            if info.status == LIVE and silent_s > self.lost_after_s:
                info.status = LOST
                self.lost_total += 1
                changed.append(info)
            elif info.status != LIVE and silent_s > FORGET_AFTER_S:
                del self.agents[agent_id]
        return changed

    def may_be_running(self, agent_id: str) -> bool:
        """Whether the agent may still be running tasks: live, or stopping (it finishes or
        hands back what it has) and heard from within ``lost_after_s``, or not heard from yet
        while this coordinator is new to its agents' heartbeats."""
        info, now = self.agents.get(agent_id), time.time()
        if info is None:
            return self.first_beat_at is None or now - self.first_beat_at <= self.lost_after_s
        if info.status == LOST:
            return False
        return info.status == LIVE or now - info.last_seen <= self.lost_after_s

    def listing(self, include_gone: bool = True) -> list[AgentInfo]:
        items = [a for a in self.agents.values() if include_gone or a.status == LIVE]
        return sorted(items, key=lambda a: (a.status != LIVE, a.agent_id))

    def why_waiting(self, queue: str, function: str) -> str | None:
        """Why a task on ``queue`` naming ``function`` cannot start now, or None if it can."""
        live = [a for a in self.agents.values() if a.status == LIVE]
        on_queue = [a for a in live if queue in a.queues]
        if not on_queue:
            return f"waiting: no agent on queue {queue}"
        if not any(function in a.functions for a in on_queue):
            return f"waiting: no agent on queue {queue} has {function}"
        return None
