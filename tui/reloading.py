"""A screen that asks its source again when what it shows changed: changes mark it stale, and
it loads at most once per ``refresh_gap_s`` (a burst of changes: one load at its end)."""

import time

from textual.screen import Screen
from textual.timer import Timer


class ReloadingScreen(Screen[None]):
    def __init__(self, refresh_gap_s: float) -> None:
        super().__init__()
        self.refresh_gap_s = refresh_gap_s
        self._loaded_at = -1e9
        """When the last load started (``load`` sets it)."""
        self._stale = False
        self._timer: Timer | None = None

    def load(self) -> None:
        """Ask the source again (a worker in the screens)."""
        raise NotImplementedError

    def mark_stale(self) -> None:
        self._stale = True

    def load_when_due(self) -> None:
        """Load now if stale and the last load is ``refresh_gap_s`` old, else at that time."""
        if not self._stale or self._timer is not None:
            return
        wait_s = self._loaded_at + self.refresh_gap_s - time.monotonic()
        if wait_s > 0:
            self._timer = self.set_timer(wait_s, self._refresh_now)
        else:
            self._refresh_now()

    def _refresh_now(self) -> None:
        self._timer, self._stale = None, False
        self.load()
