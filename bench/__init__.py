"""FlowForge benchmarks: real coordinator, agents and nats-server processes, measured end to end.

Run ``python -m bench.run --help`` from the repository root.
"""
