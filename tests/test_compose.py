"""compose.yaml and the Dockerfile agree with the code: commands parse, imports resolve, queues are served.

Docker is not needed: these tests read the files and check them against our parsers, and run
the `cluster` profile's nats-server flags on this host.
"""

import asyncio
import importlib
import json
import logging
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
import yaml

from agent import cli as agent_cli
from coordinator.service import API_GRACE_S
from flowforge.connection import ConnectOptions, connect
from flowforge.embedded import nats_server_binary
from flowforge.jetstream import ensure_streams, ensure_task_consumer, replicas_for
from flowforge.loader import check_clashes, import_target
from flowforge.registry import REGISTRY
from protocol.flows import FlowSpec
from protocol.subjects import Subjects
from tests.helpers import Proc, free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (REPO / "compose.yaml").read_text()


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` in every string, with ``env``
    as the shell's environment (``$$`` is a literal ``$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        name, colon, default = m["name"], m["colon"], m["default"]
        if default is None:
            return env.get(name, "")
        return env[name] if name in env and (env[name] or not colon) else default

    return re.sub(r"\$\$|\$\{(?P<name>\w+)(?:(?P<colon>:?)-(?P<default>[^}]*))?\}", one, value)


COMPOSE = interpolate(yaml.safe_load(COMPOSE_TEXT), {})
"""compose.yaml as `docker compose up` reads it in a shell that sets none of its variables."""
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
NATS_URL = "nats://nats:4222"
SERVICE_SCRIPTS = ("flowforge-coordinator", "flowforge-agent")
"""The long-running services; the one-shot ``flowforge register`` takes flags only."""


def built_from_our_dockerfile(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if isinstance(build, dict):
        return build.get("context", ".") == "." and build.get("dockerfile", "Dockerfile") == "Dockerfile"
    return build == "."


OUR_SERVICES = {name: s for name, s in SERVICES.items() if built_from_our_dockerfile(s)}
AGENTS = {name: s for name, s in OUR_SERVICES.items() if s["command"][0] == "flowforge-agent"}


def seconds(duration: str | int) -> float:
    """A compose duration (``20s``, ``1m30s``, ``500ms``) in seconds."""
    if isinstance(duration, int):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def option_values(argv: list[str], option: str) -> list[str]:
    """Every value given to a repeatable ``--option VALUE``."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source, for short-form ``source:target`` volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            pairs.append((keyword.upper(), args.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


def flows_of(module_name: str) -> list[FlowSpec]:
    """The flows a module registers, re-running it if another test emptied the registry."""
    def registered() -> list[FlowSpec]:
        return [f for f in REGISTRY.flows.values()
                if any(t.function.startswith(f"{module_name}:") for t in f.tasks)]

    if not registered():
        importlib.reload(sys.modules[module_name])
    return registered()


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory the agents' ``--import`` targets are resolved from."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_target prepends the cwd
    return REPO


def test_compose_defines_nats_the_coordinator_and_an_agent_per_queue() -> None:
    assert {"nats", "coordinator", "agent-default", "agent-gpu"} <= SERVICES.keys()


def test_nats_is_the_official_image_2_10_or_later_with_jetstream_on_a_named_volume() -> None:
    nats = SERVICES["nats"]
    name, _, tag = nats["image"].partition(":")
    assert name in ("nats", "library/nats", "docker.io/library/nats")
    major, minor = (int(part) for part in tag.split("-")[0].split(".")[:2])
    assert (major, minor) >= (2, 10)
    argv = nats["command"]
    assert "-js" in argv or "--jetstream" in argv
    store_dir = option_values(argv, "-sd") or option_values(argv, "--store_dir")
    assert store_dir == ["/data"]
    assert volume_targets(nats)["/data"] in COMPOSE["volumes"]


def test_the_nats_healthcheck_asks_the_monitoring_port_the_server_is_told_to_open() -> None:
    nats = SERVICES["nats"]
    (monitor_port,) = option_values(nats["command"], "-m") or option_values(nats["command"],
                                                                             "--http_port")
    probe = nats["healthcheck"]["test"]
    assert probe[0] == "CMD" and "wget" in probe[1]  # the alpine image's busybox, no shell
    url = urlsplit(probe[-1])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", int(monitor_port), "/healthz")
    assert seconds(nats["healthcheck"]["interval"]) > 0 and nats["healthcheck"]["retries"] >= 1


def test_the_coordinator_keeps_its_database_on_a_named_volume_and_starts_after_nats() -> None:
    coordinator = SERVICES["coordinator"]
    argv = coordinator["command"]
    assert argv[0] == "flowforge-coordinator"
    assert option_values(argv, "--nats") == [NATS_URL]
    (db,) = option_values(argv, "--db")
    assert PurePosixPath(db).parent == PurePosixPath("/data")
    assert volume_targets(coordinator)["/data"] in COMPOSE["volumes"]
    assert coordinator["depends_on"] == {"nats": {"condition": "service_healthy"}}
    # shutdown waits API_GRACE_S for requests in hand, then commits and drains
    assert seconds(coordinator["stop_grace_period"]) > API_GRACE_S


@pytest.mark.parametrize("name", ["agent-default", "agent-gpu"])
def test_each_agent_imports_the_examples_and_connects_to_the_compose_nats(name: str) -> None:
    agent = SERVICES[name]
    assert name in AGENTS
    assert option_values(agent["command"], "--import") == ["examples.seed_pipelines"]
    assert option_values(agent["command"], "--nats") == [NATS_URL]
    # the coordinator creates the streams: an agent that comes up first exits and is restarted
    assert agent["depends_on"] == {"nats": {"condition": "service_healthy"},
                                   "coordinator": {"condition": "service_started"}}
    assert agent["restart"] in ("unless-stopped", "always", "on-failure")


@pytest.mark.parametrize("name", ["agent-default", "agent-gpu"])
def test_docker_waits_longer_for_an_agent_to_stop_than_the_agent_lets_tasks_finish(name: str) -> None:
    argv = SERVICES[name]["command"]
    grace_s = agent_cli.build_parser().parse_args(argv[1:]).grace
    assert seconds(SERVICES[name]["stop_grace_period"]) > grace_s


def test_the_examples_are_registered_once_the_coordinator_runs_retrying_until_it_answers() -> None:
    job = SERVICES["register-examples"]
    argv = job["command"]
    assert argv[:3] == ["flowforge", "register", "examples.seed_pipelines"]
    assert option_values(argv, "--nats") == [NATS_URL]
    served = {t for agent in AGENTS.values() for t in option_values(agent["command"], "--import")}
    assert argv[2] in served  # the flows it stores are the ones the agents run
    assert job["depends_on"] == {"coordinator": {"condition": "service_started"}}
    assert job["restart"] == "on-failure"  # a one-shot: retried while the coordinator starts


def test_our_services_share_one_image_and_environment() -> None:
    assert {(s["image"], s["restart"] != "no") for s in OUR_SERVICES.values()} == {
        ("flowforge:local", True)}
    environments = [s.get("environment", {}) for s in OUR_SERVICES.values()]
    assert all(env == environments[0] for env in environments)
    assert all(isinstance(env, dict) and all(k.startswith("FLOWFORGE_") for k in env)
               for env in environments)


@pytest.mark.parametrize("name", sorted(n for n, s in OUR_SERVICES.items()
                                        if s["command"][0] in SERVICE_SCRIPTS))
def test_every_variable_a_service_is_given_is_read_by_its_script_and_accepted(
    name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = OUR_SERVICES[name]
    argv = service["command"]
    module = importlib.import_module(SCRIPTS[argv[0]].partition(":")[0])

    def defaults_with(variable: str, value: str) -> dict[str, Any]:
        monkeypatch.setenv(variable, value)
        return {a.dest: a.default for a in module.build_parser()._actions}

    for variable, value in service.get("environment", {}).items():
        read = defaults_with(variable, "one") != defaults_with(variable, "two")
        assert read, f"{name}: {argv[0]} does not read {variable}"
        monkeypatch.setenv(variable, str(value))
        module.build_parser().parse_args(argv[1:])  # the value is of the option's type
    level = service.get("environment", {}).get("FLOWFORGE_LOG_LEVEL")
    if level is not None:
        assert isinstance(logging.getLevelName(str(level)), int), f"{level!r} is not a level"


def test_the_default_agent_serves_the_default_queue() -> None:
    assert option_values(SERVICES["agent-default"]["command"], "--queue") == ["default"]


def test_the_gpu_agent_serves_queue_gpu_and_reserves_an_nvidia_gpu() -> None:
    agent = SERVICES["agent-gpu"]
    assert option_values(agent["command"], "--queue") == ["gpu"]
    devices = agent["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d["driver"] == "nvidia" and "gpu" in d["capabilities"]
        and (d.get("count") == "all" or int(d.get("count", 0)) >= 1)
        for d in devices
    )


@pytest.mark.parametrize("name", sorted(OUR_SERVICES))
def test_every_compose_command_is_one_of_our_console_scripts_and_accepts_its_arguments(
    name: str,
) -> None:
    argv = OUR_SERVICES[name]["command"]
    assert isinstance(argv, list), "use the list form so argv is exact"
    assert argv[0] in SCRIPTS, f"{argv[0]!r} is not in [project.scripts]"
    module_name, _, func = SCRIPTS[argv[0]].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, func))
    try:
        module.build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{name}: {shlex.join(argv)} is rejected by its parser (exit {exc.code})")


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_agent_import_target_resolves_from_the_working_directory(
    name: str, in_repo: Path
) -> None:
    for target in option_values(AGENTS[name]["command"], "--import"):
        module = import_target(target)
        assert flows_of(module.__name__), f"{target} registers no flows"


def test_every_queue_the_example_flows_use_is_served_by_some_agent(in_repo: Path) -> None:
    served = {q for agent in AGENTS.values() for q in option_values(agent["command"], "--queue")}
    targets = {t for agent in AGENTS.values() for t in option_values(agent["command"], "--import")}
    used = set()
    for target in targets:
        for flow in flows_of(import_target(target).__name__):
            used |= flow.queues()
    assert "gpu" in used  # the examples exercise more than the default queue
    assert used <= served, f"no agent serves {sorted(used - served)}"


def test_the_dockerfile_starts_from_python_3_11_or_later() -> None:
    from_args = [w for w in final_stage()[0][1].split() if not w.startswith("--")]
    image = from_args[0]  # FROM [--platform=...] IMAGE [AS NAME]
    name, _, tag = image.partition(":")
    assert name in ("python", "library/python", "docker.io/library/python")
    major, minor = (int(part) for part in tag.split("-")[0].split(".")[:2])
    assert (major, minor) >= (3, 11)


def test_the_dockerfile_installs_the_project_with_pip() -> None:
    runs = [shlex.split(args) for kw, args in final_stage() if kw == "RUN"]
    assert any(
        "pip" in words[i - 1] and words[i] == "install" and "." in words[i + 1:]
        for words in runs for i in range(1, len(words))
    )


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [args for kw, args in final_stage() if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_the_image_working_directory_imports_the_examples_without_clashing_with_our_packages(
    tmp_path: Path,
) -> None:
    """Rebuild the final WORKDIR from the Dockerfile's COPY lines and run the agent's clash check.

    With the repository itself copied into the working directory, its ``agent/`` or
    ``flowforge/`` would sit beside the installed packages and the agent would refuse to start.
    """
    workdir = PurePosixPath("/")
    copies: list[tuple[str, PurePosixPath]] = []
    for kw, args in final_stage():
        if kw == "WORKDIR":
            workdir = workdir / args
        elif kw == "COPY" and not args.startswith("--from"):
            *sources, dest = [w for w in shlex.split(args) if not w.startswith("--")]
            copies += [(src, workdir / dest) for src in sources]
    image_root = tmp_path / "image"
    for src, dest in copies:
        if not dest.is_relative_to(workdir):
            continue
        target = image_root / dest.relative_to(workdir)
        source = REPO / src
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    assert (image_root / "examples" / "seed_pipelines.py").is_file()
    check_clashes(image_root)


# The `cluster` profile: three NATS servers FlowForge is pointed at by FLOWFORGE_COMPOSE_NATS_URL.

CLUSTER_NODES = {name: s for name, s in SERVICES.items() if "cluster" in s.get("profiles", [])}
(CLUSTER_URL,) = re.findall(r"^#\s+export FLOWFORGE_COMPOSE_NATS_URL=(\S+)$", COMPOSE_TEXT, re.M)
"""The value compose.yaml's header tells the reader to export."""
CLUSTERED = interpolate(yaml.safe_load(COMPOSE_TEXT), {"FLOWFORGE_COMPOSE_NATS_URL": CLUSTER_URL})
"""compose.yaml as `docker compose --profile cluster up` reads it with that value exported."""


def node_flags(name: str) -> dict[str, str]:
    """A cluster node's flags that take a value, each given once."""
    argv = CLUSTER_NODES[name]["command"]
    flags = {}
    for option in ("-sd", "-m", "--server_name", "--cluster_name", "--cluster", "--routes"):
        (flags[option],) = option_values(argv, option)
    return flags


def test_plain_docker_compose_up_starts_the_single_server_stack_and_the_cluster_is_a_profile() -> None:
    assert {n for n, s in SERVICES.items() if not s.get("profiles")} == {
        "nats", "coordinator", "agent-default", "agent-gpu", "register-examples"}
    assert set(CLUSTER_NODES) == {"nats-1", "nats-2", "nats-3"}


@pytest.mark.parametrize("name", sorted(CLUSTER_NODES))
def test_each_cluster_node_runs_jetstream_under_its_own_name_on_its_own_volume(name: str) -> None:
    node, flags = CLUSTER_NODES[name], node_flags(name)
    assert node["image"] == SERVICES["nats"]["image"]
    assert "-js" in node["command"] and flags["-sd"] == "/data"
    assert flags["--server_name"] == name  # JetStream clustering needs unique server names
    assert volume_targets(node)["/data"] == f"{name}-data" and f"{name}-data" in COMPOSE["volumes"]
    assert urlsplit(node["healthcheck"]["test"][-1]).port == int(flags["-m"])


def test_the_cluster_nodes_share_a_cluster_name_and_each_routes_to_all_three() -> None:
    flags = {name: node_flags(name) for name in CLUSTER_NODES}
    assert len({f["--cluster_name"] for f in flags.values()}) == 1
    for name, f in flags.items():
        listen = urlsplit(f["--cluster"])
        assert listen.hostname == "0.0.0.0", name
        routes = {(u.hostname, u.port) for u in map(urlsplit, f["--routes"].split(","))}
        assert routes == {(node, listen.port) for node in CLUSTER_NODES}, name


def test_the_cluster_nodes_publish_distinct_client_ports_on_the_hosts_loopback_only() -> None:
    published = [p for node in CLUSTER_NODES.values() for p in node["ports"]]
    assert all(p.startswith("127.0.0.1:") and p.endswith(":4222") for p in published)
    assert len({p.split(":")[1] for p in published}) == len(CLUSTER_NODES)


@pytest.mark.parametrize("name", sorted(OUR_SERVICES))
def test_the_cluster_url_points_every_flowforge_service_at_all_three_nodes(name: str) -> None:
    argv = CLUSTERED["services"][name]["command"]
    (url,) = option_values(argv, "--nats")
    assert url == CLUSTER_URL
    assert {(u.hostname, u.port) for u in map(urlsplit, url.split(","))} == {
        (node, 4222) for node in CLUSTER_NODES}
    module = importlib.import_module(SCRIPTS[argv[0]].partition(":")[0])
    module.build_parser().parse_args(argv[1:])


def on_this_host(name: str, ports: dict[str, dict[str, int]], store: Path) -> list[str]:
    """A cluster node's compose command with container names and ports made local ones."""
    mine = ports[name]
    routes = ",".join(f"nats://127.0.0.1:{ports[node]['cluster']}" for node in CLUSTER_NODES)
    swap = {"-sd": str(store / name), "-m": str(mine["monitor"]), "--routes": routes,
            "--cluster": f"nats://127.0.0.1:{mine['cluster']}"}
    argv = list(CLUSTER_NODES[name]["command"])
    for i, arg in enumerate(argv[:-1]):
        if arg in swap:
            argv[i + 1] = swap[arg]
    return [nats_server_binary(), "-a", "127.0.0.1", "-p", str(mine["client"]), *argv]


def healthy(node: Proc, monitor_port: int) -> bool:
    assert node.popen.poll() is None, f"nats-server {shlex.join(node.args)} exited:\n{node.log()}"
    try:
        with urlopen(f"http://127.0.0.1:{monitor_port}/healthz", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:  # refused while starting; 503 until JetStream is current
        return False


async def test_the_cluster_profiles_flags_form_a_jetstream_cluster_with_streams_in_three_copies(
    tmp_path: Path,
) -> None:
    ports = {name: {kind: free_port() for kind in ("client", "cluster", "monitor")}
             for name in CLUSTER_NODES}
    nodes = [Proc(on_this_host(name, ports, tmp_path), tmp_path / f"{name}.log", env={}, cwd=tmp_path)
             for name in CLUSTER_NODES]
    try:
        for node, name in zip(nodes, CLUSTER_NODES, strict=True):
            monitor = ports[name]["monitor"]
            await wait_for(lambda n=node, m=monitor: asyncio.to_thread(healthy, n, m),
                           timeout_s=30, every_s=0.2)
        with urlopen(f"http://127.0.0.1:{ports['nats-1']['monitor']}/jsz", timeout=5) as reply:
            assert json.load(reply)["meta_cluster"]["cluster_size"] == len(CLUSTER_NODES)
        url = ",".join(f"nats://127.0.0.1:{p['client']}" for p in ports.values())
        nc = await connect(ConnectOptions(url=url), name="compose-cluster-test")
        try:
            # the coordinator's choice when not told: the servers advertise three of them
            replicas = replicas_for(nc._server_info)
            assert replicas == 3
            js, subjects = nc.jetstream(), Subjects()
            await ensure_streams(js, subjects, replicas=replicas)
            await ensure_task_consumer(js, subjects, "default")
            assert (await js.stream_info(subjects.tasks_stream)).config.num_replicas == 3
            ack = await js.publish(subjects.task("default"), b"{}")
            assert ack.stream == subjects.tasks_stream
        finally:
            await nc.close()
    finally:
        for node in nodes:
            node.stop()
