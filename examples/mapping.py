"""A mapped task: one instance per file the first task lists, at most four at once, and a
summary over all of their outputs in file order."""

from flowforge import register_task_pipeline


def list_files(n_files: int = 8) -> list[str]:
    return [f"s3://landing/2026-12-06/part-{i:05d}.csv" for i in range(n_files)]


def count_rows(item: str, map_index: int) -> int:
    """Stands in for reading one file: a real one would open ``item``."""
    if item.endswith("-00005.csv"):
        raise ValueError(f"{item}: truncated gzip stream")
    return 1_000 + 37 * map_index


def summarise(count_rows: list[int | None]) -> dict:
    done = [n for n in count_rows if n is not None]
    return {"files": len(count_rows), "read": len(done), "rows": sum(done)}


register_task_pipeline(
    flow_name="files_fan",
    pipeline={
        "list_files": {"function": list_files},
        "count_rows": {"function": count_rows, "map_over": "list_files", "max_active": 4,
                       "allow_failures": 1, "retries": 1},
        "summarise": {"function": summarise, "depends_on": ["count_rows"]},
    },
)
