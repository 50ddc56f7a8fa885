"""Banner: a one-line warning while the deployment cannot be reached (the last state stays shown)."""

from textual.widgets import Static

from tui.hub import hub_of
from tui.model import Dirty


class Banner(Static):
    """Hidden while connected; shows why and since when otherwise."""

    def on_mount(self) -> None:
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.show_state()

    def on_changed(self, dirty: Dirty) -> None:
        if "link" in dirty.kinds or "tick" in dirty.kinds:
            self.show_state()

    def show_state(self) -> None:
        hub = hub_of(self)
        down = hub.model.link_down
        self.display = down is not None
        if down is not None:
            now = hub.clock()
            since = now - (hub.model.down_since or now)
            self.update(f"⚠ not connected ({since:.0f} s): {down} — showing the last known state; "
                        "reconnecting…")
