"""The comparison: one row per metric — FlowForge, Celery, the ratio, the issue's target, met or not.

Every number is the median over a workload's samples. The ratio is always "how much better
FlowForge is": FlowForge ÷ Celery for rates, Celery ÷ FlowForge for times, printed as
"Nx faster" (or "Nx slower" below 1). Targets are checked against the numbers printed.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

RATIO_TARGET = 10.0
"""FlowForge tasks/s at least this many times Celery's."""
FANOUT_TARGET_S = 3.0
CHAIN_TARGET_MS = 1.5
DISPATCH_P99_TARGET_MS = 10.0
RSS_TARGET_BYTES = 300_000_000
"""300 MB (decimal: 286.1 MiB), against the coordinator's peak RSS."""
FLAT_FACTOR = 1.5
FLAT_SLACK_MS = 20.0
"""Start time is "flat" when after ≤ max(1.5 x before, before + 20 ms) (a noisy 2-core box)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One printed line of the comparison, with the numbers it was made from."""

    workload: str
    size: str
    metric: str
    flowforge: str
    celery: str
    ratio: str
    target: str
    verdict: str
    flowforge_value: float | None = None
    celery_value: float | None = None
    speedup: float | None = None


def _med(entry: dict[str, Any], side: str, key: str) -> float | None:
    value = entry.get(side, {}).get("median", {}).get(key)
    return float(value) if value is not None else None


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _celery_text(entry: dict[str, Any], value: float | None, spec: str) -> str:
    cel = entry.get("celery", {})
    if "skipped" in cel:
        return "FlowForge only" if cel["skipped"] == "FlowForge only" else "not run"
    if "error" in cel and value is None:
        return "FAILED"
    return _fmt(value, spec)


def speedup(ff: float | None, cel: float | None, higher_is_better: bool) -> float | None:
    """How many times better FlowForge is (> 1) or worse (< 1); None without both numbers."""
    if ff is None or cel is None or ff <= 0 or cel <= 0:
        return None
    return ff / cel if higher_is_better else cel / ff


def ratio_text(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.1f}x faster" if x >= 1 else f"{1 / x:.1f}x slower"


def verdict(ok: bool | None, why_not: str = "n/a") -> str:
    return why_not if ok is None else ("met" if ok else "not met")


def _ff_text(entry: dict[str, Any], value: float | None, spec: str) -> str:
    if value is None and "error" in entry.get("flowforge", {}):
        return "FAILED"
    return _fmt(value, spec)


Check = Callable[[float | None, float | None, float | None], bool | None]


def _metric_row(entry: dict[str, Any], metric: str, ff_key: str, cel_key: str | None, spec: str,
                higher: bool, target: str = "", check: Check | None = None,
                first: bool = True) -> Row:
    ff = _med(entry, "flowforge", ff_key)
    cel = _med(entry, "celery", cel_key) if cel_key else None
    x = speedup(ff, cel, higher)
    ok = check(ff, cel, x) if check is not None else None
    missing = "n/a (no Celery number)" if ff is not None else "n/a (FlowForge failed)"
    return Row(entry["label"] if first else "", entry["size"] if first else "", metric,
               _ff_text(entry, ff, spec),
               _celery_text(entry, cel, spec) if cel_key else "not measured", ratio_text(x), target,
               verdict(ok, missing) if target else "", ff, cel, x)


def _ratio_ok(ff: float | None, cel: float | None, x: float | None) -> bool | None:
    return None if x is None else x >= RATIO_TARGET


def _at_most(limit: float) -> Check:
    return lambda ff, cel, x: None if ff is None else ff <= limit


def is_flat(before: float, after: float) -> bool:
    """After no slower than ``FLAT_FACTOR`` x before, with ``FLAT_SLACK_MS`` of slack."""
    return after <= max(FLAT_FACTOR * before, before + FLAT_SLACK_MS)


def _scale_rows(entry: dict[str, Any]) -> list[Row]:
    med = entry.get("flowforge", {}).get("median", {})
    if not med:
        return [Row(entry["label"], entry["size"], "everything", "FAILED", "FlowForge only", "—",
                    "", "n/a (FlowForge failed)")]
    mib = med["coordinator_peak_rss_kib"] / 1024
    rows = [Row(entry["label"], entry["size"],
                f"coord peak RSS, {med['stored_tasks_at_memory']:,.0f} tasks stored",
                f"{mib:.1f} MiB (now {med['coordinator_rss_kib'] / 1024:.1f})", "FlowForge only", "—",
                "≤ 300 MB (286.1 MiB)",
                verdict(med["coordinator_peak_rss_kib"] * 1024 <= RSS_TARGET_BYTES), mib),
            Row("", "", f"coord CPU s, the {med['history_tasks']:,.0f}-task history",
                f"{med['history_cpu_coordinator_s']:.1f} s "
                f"(total {med['coordinator_cpu_s']:.1f} s)", "FlowForge only", "—", "", "",
                med["history_cpu_coordinator_s"])]
    for key, what in (("reply_ms", "start → API reply ms"),
                      ("first_queued_ms", "start → 1st task queued ms"),
                      ("first_started_ms", "start → 1st task started ms")):
        if f"before_{key}" not in med or f"after_{key}" not in med:
            continue
        before, after = med[f"before_{key}"], med[f"after_{key}"]
        rows.append(Row("", "", f"{what}, before → after",
                        f"{before:.1f} → {after:.1f} (x{after / before:.2f})", "FlowForge only",
                        "—", "flat (≤ x1.5 or +20 ms)", verdict(is_flat(before, after)), after))
    return rows


def _latency_rows(entry: dict[str, Any]) -> list[Row]:
    p99 = _at_most(DISPATCH_P99_TARGET_MS)
    return [
        _metric_row(entry, "ready → started p50 ms", "dispatch_p50_ms", "p50_ms", ".2f", False),
        _metric_row(entry, "ready → started p99 ms", "dispatch_p99_ms", "p99_ms", ".2f", False,
                    "p99 ≤ 10 ms", p99, first=False),
        _metric_row(entry, "submit → started p50 ms", "submit_p50_ms", "p50_ms", ".2f", False,
                    first=False),
        _metric_row(entry, "submit → started p99 ms", "submit_p99_ms", "p99_ms", ".2f", False,
                    first=False),
        _metric_row(entry, "end to end p50 ms", "e2e_p50_ms", None, ".2f", False,
                    first=False),
        _metric_row(entry, "end to end p99 ms", "e2e_p99_ms", None, ".2f", False,
                    first=False),
    ]


def rows_for(entry: dict[str, Any]) -> list[Row]:
    """The comparison rows of one workload entry."""
    match entry["kind"]:
        case "wide":
            return [_metric_row(entry, "tasks/s", "tasks_per_s", "tasks_per_s", ",.0f", True,
                                "≥ 10x Celery tasks/s", _ratio_ok)]
        case "defaults":
            return [_metric_row(entry, "tasks/s, both at defaults", "tasks_per_s", "tasks_per_s",
                                ",.0f", True, "≥ 10x Celery tasks/s", _ratio_ok)]
        case "triggers":
            return [_metric_row(entry, "runs/s", "runs_per_s", "runs_per_s", ",.0f", True,
                                "≥ 10x Celery tasks/s", _ratio_ok)]
        case "fanout":
            return [_metric_row(entry, "wall s, start → join done", "wall_s", "wall_s", ".3f",
                                False, "≤ 3 s", _at_most(FANOUT_TARGET_S))]
        case "chain":
            return [_metric_row(entry, "ms per hop", "ms_per_hop", "ms_per_hop", ".2f", False,
                                "≤ 1.5 ms/hop", _at_most(CHAIN_TARGET_MS))]
        case "latency":
            return _latency_rows(entry)
        case "scale":
            return _scale_rows(entry)
        case _:
            workers = entry["agents"]
            row = _metric_row(entry, f"runs/s ({workers} Celery worker{'s' * (workers > 1)})",
                              "runs_per_s", "runs_per_s", ",.0f", True)
            return [row]


def comparison(result: dict[str, Any]) -> list[Row]:
    return [row for entry in result["workloads"].values() for row in rows_for(entry)]


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
