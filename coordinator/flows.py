"""The registered flows, compiled once per version and kept in memory."""

from collections.abc import Callable

from coordinator.graph import CompiledFlow
from coordinator.store import Store
from protocol.errors import UnknownFlow
from protocol.flows import FlowSpec


class FlowCache:
    """Current version of each flow, and every version an active run still uses."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._current: dict[str, CompiledFlow] = {}
        self._versions: dict[tuple[str, str], CompiledFlow] = {}
        self.listeners: list[Callable[[CompiledFlow], None]] = []
        """Told of each flow's current version as it is known (registered, or read)."""

    @property
    def store(self) -> Store:
        """Where the flows are kept (the readers of runs use it too: ``stats.flow``)."""
        return self._store

    def put(self, spec: FlowSpec) -> CompiledFlow:
        compiled = CompiledFlow.compile(spec)
        self._current[spec.name] = compiled
        self._versions[(spec.name, compiled.version)] = compiled
        for listener in self.listeners:
            listener(compiled)
        return compiled

    async def current(self, name: str) -> CompiledFlow:
        found = self._current.get(name)
        if found is not None:
            return found
        row = await self._store.get_flow(name)
        if row is None:
            raise UnknownFlow(name)
        return self.put(row[0])

    async def version(self, name: str, version: str) -> CompiledFlow:
        found = self._versions.get((name, version))
        if found is not None:
            return found
        row = await self._store.get_flow(name, version)
        if row is None:
            raise UnknownFlow(f"{name}@{version}")
        compiled = CompiledFlow.compile(row[0])
        self._versions[(name, version)] = compiled
        return compiled

    def queues(self) -> set[str]:
        return {q for flow in self._current.values() for q in flow.spec.queues()}
