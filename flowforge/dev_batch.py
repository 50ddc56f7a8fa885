"""``flowforge dev FILE --run FLOW --batch PARAMS.jsonl``: the flow over every parameter set of
the file as one batch, then its runs side by side — in the dashboard's Experiments view, or
(``--headless``) as ``flowforge experiments`` prints them once the batch ends."""

import sys
from typing import Any

from flowforge import runtime
from flowforge.batch_cli import ParamsFile, exit_code, submission_text
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.experiments_cli import experiments_text
from flowforge.terminal import out


async def submit(client: Client, flow: str, params: ParamsFile) -> str | None:
    """Submit the batch (its items that already ran are skipped); its id, None if none ran."""
    sub = await client.submit_batch(flow, params.items)
    out(submission_text(sub, params), file=sys.stderr)
    return sub.batch.batch_id if sub.batch is not None else None


async def headless(client: Client, flow: str, params: ParamsFile) -> int:
    """Wait for the batch to end, print the experiments table; exit 1 if an item failed."""
    batch_id = await submit(client, flow, params)
    code = runtime.EXIT_OK
    if batch_id is not None:
        final = await client.wait_batch(batch_id)
        out(f"batch {batch_id} {final.state.value}", file=sys.stderr)
        code = exit_code(final)
    page = await client.experiments(flow)
    sys.stdout.write(experiments_text(page, emphasis=sys.stdout.isatty()) + "\n")
    return code


async def dashboard(client: Client, opts: ConnectOptions, flow: str, params: ParamsFile) -> int:
    """The dashboard, opened on the flow's Experiments view while the batch runs."""
    await submit(client, flow, params)
    await experiments_app(opts, flow).run_async()
    return runtime.EXIT_OK


def experiments_app(opts: ConnectOptions, flow: str) -> Any:
    """The dashboard over ``opts``, showing ``flow``'s Experiments view first."""
    from tui.app import DashboardApp
    from tui.client_source import ClientSource
    from tui.experiments_view import ExperimentsScreen

    app = DashboardApp(ClientSource(opts))
    app.call_after_refresh(app.push_screen, ExperimentsScreen(flow))
    return app
