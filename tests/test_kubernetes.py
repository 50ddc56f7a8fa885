"""deploy/kubernetes agrees with the Kubernetes API and with the code.

No cluster is needed: kubernetes-validate checks each built-in resource against the API's JSON
schemas (strict, so a misspelt field fails instead of being dropped), KEDA's ScaledObjects are
checked against what KEDA's nats-jetstream scaler reads, and every command a container runs is
parsed by the real parser of its console script.
"""

import importlib
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from agent import cli as agent_cli
from coordinator.service import API_GRACE_S
from flowforge.loader import import_target
from protocol.subjects import DEFAULT_NAMESPACE, Subjects
from tests.test_compose import flows_of, option_values

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
"""The oldest Kubernetes the manifests are meant for, and a recent one."""
SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
NOT_RESOURCES = ("nats-values.yaml", "kustomization.yaml")
"""Helm values and kustomize's own file: YAML under deploy/kubernetes that is no resource."""

MANIFESTS: dict[str, list[dict[str, Any]]] = {
    path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for path in sorted(K8S.glob("*.yaml")) if path.name not in NOT_RESOURCES
}
RESOURCES = [(name, doc) for name, docs in MANIFESTS.items() for doc in docs]
BUILT_IN = [(name, doc) for name, doc in RESOURCES if not doc["apiVersion"].startswith("keda.sh/")]
SCALED_OBJECTS = {doc["metadata"]["name"]: doc for _, doc in RESOURCES if doc["kind"] == "ScaledObject"}
WORKLOADS = {doc["metadata"]["name"]: doc for _, doc in RESOURCES
             if doc["kind"] in ("StatefulSet", "Deployment", "Job")}
CONFIG_MAPS = {doc["metadata"]["name"]: doc["data"] for _, doc in RESOURCES if doc["kind"] == "ConfigMap"}
NATS_VALUES: dict[str, Any] = yaml.safe_load((K8S / "nats-values.yaml").read_text())
NATS_RELEASE = "nats"
"""The Helm release name README.md installs the chart as: its Services are named after it."""
NAMESPACE = "flowforge"

KEDA_NATS_JETSTREAM_KEYS = frozenset({
    "natsServerMonitoringEndpoint", "account", "accountID", "stream", "consumer",
    "lagThreshold", "activationLagThreshold", "useHttps",
})
"""The trigger metadata KEDA's nats-jetstream scaler reads (pkg/scalers/nats_jetstream_scaler.go)."""
SCALED_OBJECT_SPEC_KEYS = frozenset({
    "scaleTargetRef", "pollingInterval", "initialCooldownPeriod", "cooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "advanced", "triggers", "fallback",
})
"""The fields of KEDA's ScaledObjectSpec (apis/keda/v1alpha1/scaledobject_types.go)."""
SERVICES = ("flowforge-coordinator", "flowforge-agent")
"""The long-running scripts; the one-shot ``flowforge register`` reads its connection only."""
STOP_MARGIN_S = 10
"""What an agent needs after its --grace: store the results, hand back the rest, drain."""


def schema_problem(resource: dict[str, Any], version: str) -> str | None:
    """Where and why the resource breaks the API's schema (without the schema, which is long)."""
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"at {'.'.join(str(p) for p in exc.absolute_path) or 'the top'}: {exc.message}"
    return None


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, workload in WORKLOADS.items():
        for container in pod_spec(workload)["containers"]:
            yield f"{name}/{container['name']}", container


CONTAINERS = dict(containers())
AGENTS = {name: w for name, w in WORKLOADS.items()
          if pod_spec(w)["containers"][0]["command"] == ["flowforge-agent"]}


def environment(container: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees as its environment, from the ConfigMaps and ``env``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in CONFIG_MAPS, f"envFrom names ConfigMap {name!r}, which no manifest defines"
        env.update(CONFIG_MAPS[name])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def expand(word: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` in command and args. Kubernetes leaves an unknown one as written,
    which would reach the script as a literal: here it fails."""
    expanded = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), word)
    assert "$(" not in expanded, f"{word!r} names a variable the container does not have"
    return expanded


def argv_of(container: dict[str, Any]) -> list[str]:
    env = environment(container)
    return [expand(w, env) for w in [*container.get("command", []), *container.get("args", [])]]


def commands() -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """(where, argv, environment) of every container's command and exec probe."""
    for where, container in CONTAINERS.items():
        env = environment(container)
        yield where, argv_of(container), env
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "exec" in container.get(probe, {}):
                argv = container[probe]["exec"]["command"]
                # the kubelet expands a probe's $(VAR) from `env` values only, not from envFrom
                # (the ConfigMap): keep them out; the probe's process inherits the environment
                assert not any("$(" in w for w in argv), f"{where} {probe}: {argv}"
                yield f"{where} {probe}", argv, env


COMMANDS = list(commands())


def parse(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Parse ``argv`` with its console script's own parser, in the container's environment."""
    assert argv and argv[0] in SCRIPTS, f"{argv[:1]} is not one of [project.scripts]"
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    module = importlib.import_module(SCRIPTS[argv[0]].partition(":")[0])
    try:
        return module.build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{shlex.join(argv)} is rejected by its parser (exit {exc.code})")


def grace_s(agent: dict[str, Any]) -> float:
    return float(agent_cli.build_parser().parse_args(argv_of(pod_spec(agent)["containers"][0])[1:]).grace)


def queue_of(agent: dict[str, Any]) -> str:
    (queue,) = option_values(argv_of(pod_spec(agent)["containers"][0]), "--queue")
    return queue


def subject_namespace(container: dict[str, Any]) -> str:
    return environment(container).get("FLOWFORGE_NAMESPACE", DEFAULT_NAMESPACE)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory the agents' ``--import`` targets are resolved from."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_target prepends the cwd
    return REPO


def test_the_manifests_hold_the_coordinator_both_agents_and_their_scalers() -> None:
    assert {"flowforge-coordinator", "flowforge-agent-default", "flowforge-agent-gpu"} <= WORKLOADS.keys()
    assert WORKLOADS["flowforge-coordinator"]["kind"] == "StatefulSet"
    assert set(SCALED_OBJECTS) == set(AGENTS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("resource", [doc for _, doc in BUILT_IN],
                         ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in BUILT_IN])
def test_every_built_in_resource_is_valid_for_the_kubernetes_api(
    resource: dict[str, Any], version: str,
) -> None:
    problem = schema_problem(resource, version)
    name = f"{resource['kind']}/{resource['metadata']['name']}"
    assert problem is None, f"{name} on Kubernetes {version}: {problem}"


def test_every_resource_lives_in_the_namespace_namespace_yaml_creates() -> None:
    assert [doc["metadata"]["name"] for doc in MANIFESTS["namespace.yaml"]] == [NAMESPACE]
    for _, doc in RESOURCES:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


@pytest.mark.parametrize("where, argv, env", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_a_container_runs_is_accepted_by_its_console_scripts_parser(
    where: str, argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    parse(argv, env, monkeypatch)


def test_the_command_check_fails_on_a_flag_the_parser_does_not_know(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(pytest.fail.Exception, match="rejected by its parser"):
        parse(["flowforge-agent", "--queues", "gpu", "--import", "examples.seed_pipelines"], {},
              monkeypatch)


@pytest.mark.parametrize("where", sorted(w for w, c in CONTAINERS.items() if c["command"][0] in SERVICES))
def test_every_variable_a_service_is_given_is_read_by_its_script(
    where: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = CONTAINERS[where]
    module = importlib.import_module(SCRIPTS[container["command"][0]].partition(":")[0])

    def defaults_with(variable: str, value: str) -> dict[str, Any]:
        monkeypatch.setenv(variable, value)
        return {a.dest: a.default for a in module.build_parser()._actions}

    for variable in environment(container):
        assert defaults_with(variable, "one") != defaults_with(variable, "two"), (
            f"{where}: {container['command'][0]} does not read {variable}")


def test_the_coordinator_is_one_pod_with_its_database_on_a_claimed_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coordinator = WORKLOADS["flowforge-coordinator"]
    assert coordinator["spec"]["replicas"] == 1
    container = pod_spec(coordinator)["containers"][0]
    argv = argv_of(container)
    ns = parse(argv, environment(container), monkeypatch)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"]: c["spec"] for c in coordinator["spec"]["volumeClaimTemplates"]}
    db_dir = str(PurePosixPath(str(ns.db)).parent)
    assert mounts[db_dir] in claims, f"{ns.db} is not on a volume claim"
    assert claims[mounts[db_dir]]["accessModes"] == ["ReadWriteOnce"]
    # an explicit URL: without one the coordinator starts an embedded nats-server in the pod
    assert option_values(argv, "--nats") == [CONFIG_MAPS["flowforge"]["FLOWFORGE_NATS_URL"]]


def test_the_coordinator_keeps_each_stream_in_as_many_copies_as_a_majority_of_nats_survives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Explicit: the chart's servers advertise no addresses (noAdvertise, its default), so the
    coordinator could not count them and would choose one copy."""
    container = pod_spec(WORKLOADS["flowforge-coordinator"])["containers"][0]
    replicas = parse(argv_of(container), environment(container), monkeypatch).replicas
    assert replicas is not None and replicas % 2 == 1
    assert 3 <= replicas <= NATS_VALUES["config"]["cluster"]["replicas"]


def test_the_coordinators_statefulset_is_governed_by_a_headless_service_that_selects_it() -> None:
    coordinator = WORKLOADS["flowforge-coordinator"]
    services = {doc["metadata"]["name"]: doc for _, doc in RESOURCES if doc["kind"] == "Service"}
    service = services[coordinator["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    labels = coordinator["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert coordinator["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_each_workload_selects_its_own_pods_and_no_other_workloads() -> None:
    templates = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in WORKLOADS.items()}
    for name, workload in WORKLOADS.items():
        if workload["kind"] == "Job":
            continue  # Kubernetes makes a Job's selector itself
        selector = workload["spec"]["selector"]["matchLabels"].items()
        assert [n for n, labels in templates.items() if selector <= labels.items()] == [name]


def test_the_coordinator_has_time_to_answer_the_requests_in_hand_before_it_is_killed() -> None:
    coordinator = WORKLOADS["flowforge-coordinator"]
    assert pod_spec(coordinator)["terminationGracePeriodSeconds"] > API_GRACE_S + STOP_MARGIN_S


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_the_kubelet_waits_longer_for_an_agent_to_stop_than_the_agent_lets_tasks_finish(
    name: str,
) -> None:
    assert pod_spec(AGENTS[name])["terminationGracePeriodSeconds"] >= grace_s(AGENTS[name]) + STOP_MARGIN_S


def test_every_pod_runs_as_the_images_unprivileged_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    (uid,) = re.findall(r"--uid (\d+)", dockerfile)
    for name, workload in WORKLOADS.items():
        context = pod_spec(workload)["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == int(uid), name


def test_our_containers_share_one_image() -> None:
    assert len({c["image"] for c in CONTAINERS.values()}) == 1


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_agent_deployments_leave_their_replica_count_to_keda(name: str) -> None:
    assert AGENTS[name]["kind"] == "Deployment" and "replicas" not in AGENTS[name]["spec"]


def test_every_import_target_resolves_and_every_queue_the_examples_use_is_served(in_repo: Path) -> None:
    targets = {t for w in WORKLOADS.values() for c in pod_spec(w)["containers"]
               for t in option_values(argv_of(c), "--import")}
    assert targets
    used = {q for target in targets for flow in flows_of(import_target(target).__name__)
            for q in flow.queues()}
    served = {queue_of(agent) for agent in AGENTS.values()}
    assert "gpu" in used and used <= served, f"no agent serves {sorted(used - served)}"


def test_the_gpu_agent_serves_queue_gpu_with_one_gpu_on_gpu_nodes() -> None:
    agent = AGENTS["flowforge-agent-gpu"]
    assert queue_of(agent) == "gpu"
    spec = pod_spec(agent)
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])


@pytest.mark.parametrize("name", sorted(SCALED_OBJECTS))
def test_each_scaled_object_is_a_keda_scaled_object_of_an_agent_deployment(name: str) -> None:
    scaled = SCALED_OBJECTS[name]
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    spec = scaled["spec"]
    assert spec.keys() <= SCALED_OBJECT_SPEC_KEYS, sorted(spec.keys() - SCALED_OBJECT_SPEC_KEYS)
    target = AGENTS[spec["scaleTargetRef"]["name"]]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == target["kind"]
    assert scaled["metadata"]["namespace"] == target["metadata"]["namespace"]
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]


@pytest.mark.parametrize("name", sorted(SCALED_OBJECTS))
def test_each_trigger_gives_the_nats_jetstream_scaler_only_the_metadata_it_reads(name: str) -> None:
    (trigger,) = SCALED_OBJECTS[name]["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    metadata = trigger["metadata"]
    assert metadata.keys() <= KEDA_NATS_JETSTREAM_KEYS, sorted(metadata.keys() - KEDA_NATS_JETSTREAM_KEYS)
    assert {"natsServerMonitoringEndpoint", "stream", "consumer"} <= metadata.keys()
    assert metadata.keys() & {"account", "accountID"}
    assert metadata.get("account") == "$G"  # the server's global account: no accounts configured
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA's metadata is strings only"
    assert int(metadata["lagThreshold"]) >= 1 and int(metadata.get("activationLagThreshold", "0")) >= 0


@pytest.mark.parametrize("name", sorted(SCALED_OBJECTS))
def test_each_trigger_watches_the_stream_and_consumer_its_agents_pull_from(name: str) -> None:
    (trigger,) = SCALED_OBJECTS[name]["spec"]["triggers"]
    agent = AGENTS[SCALED_OBJECTS[name]["spec"]["scaleTargetRef"]["name"]]
    subjects = Subjects(subject_namespace(pod_spec(agent)["containers"][0]))
    assert trigger["metadata"]["stream"] == subjects.tasks_stream
    assert trigger["metadata"]["consumer"] == subjects.task_consumer(queue_of(agent))


@pytest.mark.parametrize("name", sorted(SCALED_OBJECTS))
def test_each_trigger_reads_the_nats_charts_headless_service_on_its_monitoring_port(name: str) -> None:
    (trigger,) = SCALED_OBJECTS[name]["spec"]["triggers"]
    endpoint = urlsplit("//" + trigger["metadata"]["natsServerMonitoringEndpoint"])
    assert endpoint.hostname == f"{NATS_RELEASE}-headless.{NAMESPACE}.svc.cluster.local"
    assert endpoint.port == NATS_VALUES["config"]["monitor"]["port"]
    assert trigger["metadata"].get("useHttps", "false") == "false"  # the chart's monitor has no TLS here


def test_the_nats_values_make_a_three_node_jetstream_cluster_with_monitoring() -> None:
    config = NATS_VALUES["config"]
    assert config["cluster"]["enabled"] is True
    assert config["cluster"]["replicas"] >= 3 and config["cluster"]["replicas"] % 2 == 1
    assert config["jetstream"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["enabled"] and config["jetstream"]["fileStore"]["pvc"]["enabled"]
    assert config["monitor"]["enabled"] is True


def test_flowforge_connects_to_the_charts_client_service_or_its_pods() -> None:
    port = NATS_VALUES["config"].get("nats", {}).get("port", 4222)
    replicas = NATS_VALUES["config"]["cluster"]["replicas"]
    pods = {f"{NATS_RELEASE}-{i}.{NATS_RELEASE}-headless" for i in range(replicas)}
    for url in CONFIG_MAPS["flowforge"]["FLOWFORGE_NATS_URL"].split(","):
        parts = urlsplit(url.strip())
        assert parts.scheme == "nats" and parts.port == port, url
        assert parts.hostname == NATS_RELEASE or parts.hostname in pods, url


def test_the_kustomization_applies_every_manifest_but_the_scaled_objects() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert all((K8S / r).is_file() for r in kustomization["resources"])
    assert set(kustomization["resources"]) == set(MANIFESTS) - {"keda-scaledobject.yaml"}
    assert not any(doc["kind"] == "ScaledObject" for r in kustomization["resources"] for doc in MANIFESTS[r])


README = (K8S / "README.md").read_text()
README_SHELL = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S))


def readme_commands() -> list[list[str]]:
    """Each of our console scripts in the README's shell blocks, also after ``kubectl exec ... --``."""
    found = []
    for line in README_SHELL.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if "--" in words:
                words = words[words.index("--") + 1:]
            if words and words[0] in SCRIPTS:
                found.append(words)
    return found


README_COMMANDS = readme_commands()


def test_the_readme_installs_the_nats_chart_as_the_release_and_with_the_values_the_tests_read() -> None:
    (helm,) = [shlex.split(line) for line in README_SHELL.splitlines()
               if line.startswith("helm upgrade --install nats ")]
    assert helm[3:5] == [NATS_RELEASE, "nats/nats"]
    assert option_values(helm, "--namespace") == [NAMESPACE]
    (values,) = option_values(helm, "-f")
    assert (REPO / values).resolve() == K8S / "nats-values.yaml"


def test_the_readme_documents_the_keda_pitfalls_and_the_headless_service() -> None:
    for needle in ("kedacore/keda#3860", "kedacore/keda#6042", "nats-headless",
                   "terminationGracePeriodSeconds", "--grace"):
        assert needle in README
    assert len(README_COMMANDS) >= 3


@pytest.mark.parametrize("argv", README_COMMANDS, ids=[" ".join(c)[:60] for c in README_COMMANDS])
def test_every_flowforge_command_in_the_readme_parses(
    argv: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    parse(argv, {}, monkeypatch)
