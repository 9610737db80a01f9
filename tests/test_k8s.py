"""The Kubernetes deployment in ``k8s/``: rendered, validated and checked offline (no cluster, no network).

Rendering: ``kubectl kustomize`` when kubectl (with kustomize 5+) is on PATH, else ``mini_kustomize``
below, a small renderer for exactly the kustomize features ``k8s/`` uses (resources, components, namespace,
metadata-only labels, patches that are JSON 6902 or map-only strategic merges, replicas, images); it refuses
anything else rather than render it wrongly. Where kubectl is present, a test renders every kustomization both
ways and compares them, which keeps the fallback honest. ``BDURABLE_K8S_RENDERER=mini`` (or ``kubectl``)
forces one renderer.

Validation: built-in kinds against the JSON schemas of Kubernetes releases bundled with
``kubernetes-validate``, strictly (an unknown field fails); the custom resources (PodMonitor, ScaledObject,
TriggerAuthentication) against our own small schemas in ``k8s/schemas`` with ``jsonschema``. A kind with no
schema fails.

Then the invariants docs/deploy.md promises: probes, resources and a locked-down security context on every
container, every role in every overlay, the Redis URL only from a Secret, the PDB on the dispatchers, the
NetworkPolicy allowing only Redis and DNS egress, the dev Redis' persistence, KEDA's list name.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
SCHEMAS = K8S / "schemas"
DOCS = ROOT / "docs" / "deploy.md"

Obj = dict[str, Any]

ROLES = ("dispatcher", "scheduler", "reaper", "signal-bus")
# Every kustomization we ship, plus production with each optional component switched on as docs/deploy.md says.
TARGETS = ("base", "dev", "production", "production+keda", "production+blue-green")
OVERLAY_TARGETS = TARGETS[1:]

# Oldest Kubernetes minor release the manifests support (docs/deploy.md), and the newest bundled schemas.
MIN_KUBERNETES = "1.30"
KUBERNETES_VERSIONS = (MIN_KUBERNETES, kv.latest_version())

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
}

REQUIRED_SETTINGS = {
    "BDURABLE_PREFIX",
    "BDURABLE_RETENTION",
    "BDURABLE_HEARTBEAT_INTERVAL",
    "BDURABLE_HEARTBEAT_TIMEOUT",
    "BDURABLE_LOG_FORMAT",
    "BDURABLE_LOG_LEVEL",
    "BDURABLE_METRICS_PORT",
    "BDURABLE_MAX_PAYLOAD",
    "BDURABLE_WAIT_REPLICAS",
}

# The dispatcher drains in-flight work for up to this long after SIGTERM.
DISPATCHER_DRAIN_S = 25


# ------------------------------------------------------------------------------------------------------------
# A small kustomize, for machines without kubectl
# ------------------------------------------------------------------------------------------------------------


class Unsupported(Exception):
    """A kustomize feature this renderer does not implement: use kubectl, or keep k8s/ within the subset."""


_KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "labels",
    "patches",
    "replicas",
    "images",
}
_CLUSTER_SCOPED = {
    "APIService",
    "ClusterRole",
    "ClusterRoleBinding",
    "CSIDriver",
    "CustomResourceDefinition",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "PersistentVolume",
    "PriorityClass",
    "RuntimeClass",
    "StorageClass",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
}
# Kinds whose namespace also appears inside the object (subjects, webhook services): not handled here.
_NAMESPACE_REFERRERS = {
    "RoleBinding",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "APIService",
    "CustomResourceDefinition",
}
_SCALABLE = {"Deployment", "ReplicaSet", "ReplicationController", "StatefulSet"}


def mini_kustomize(directory: Path) -> list[Obj]:
    """Render the kustomization in ``directory`` like ``kubectl kustomize`` does, for the subset k8s/ uses."""
    return _build(directory, [], expect="Kustomization")


def _load_kustomization(directory: Path) -> Obj:
    for name in _KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            unknown = set(data) - _SUPPORTED_FIELDS
            if unknown:
                raise Unsupported(f"{path}: fields {sorted(unknown)}")
            return dict(data)
    raise FileNotFoundError(f"no kustomization in {directory}")


def _load_objects(path: Path) -> list[Obj]:
    objects = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for obj in objects:
        if obj.get("kind", "").endswith("List"):
            raise Unsupported(f"{path}: List objects")
    return objects


def _build(directory: Path, accumulated: list[Obj], *, expect: str) -> list[Obj]:
    k = _load_kustomization(directory)
    if k.get("kind", "Kustomization") != expect:
        raise ValueError(f"{directory}: expected a {expect}, found {k.get('kind')}")
    # The same order as kustomize: resources, then components (each adds its resources and then transforms
    # everything accumulated so far), then this kustomization's own transformers in kustomize's fixed order.
    objects = list(accumulated)
    for entry in k.get("resources", []):
        path = directory / entry
        objects += _build(path, [], expect="Kustomization") if path.is_dir() else _load_objects(path)
    for entry in k.get("components", []):
        objects = _build(directory / entry, objects, expect="Component")
    ids = [_identity(o) for o in objects]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"{directory}: duplicate objects {sorted(duplicates)}")
    for patch in k.get("patches", []):
        _apply_patch(directory, objects, patch)
    if "namespace" in k:
        _set_namespace(objects, k["namespace"])
    for spec in k.get("labels", []):
        _add_labels(objects, spec)
    for spec in k.get("replicas", []):
        _set_replicas(objects, spec)
    for spec in k.get("images", []):
        _set_image(objects, spec)
    return objects


def _identity(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _apply_patch(directory: Path, objects: list[Obj], entry: Obj) -> None:
    if set(entry) - {"patch", "path", "target"} or ("patch" in entry) == ("path" in entry):
        raise Unsupported(f"{directory}: patch entry {entry}")
    text = entry["patch"] if "patch" in entry else (directory / entry["path"]).read_text()
    body = yaml.safe_load(text)
    target = entry.get("target")
    if isinstance(body, list):
        if target is None:
            raise ValueError(f"{directory}: a JSON 6902 patch needs a target")
        selected = _select(objects, target)
        for obj in selected:
            _json_patch(obj, body)
    else:
        if target is None:
            target = {"kind": body["kind"], "name": body["metadata"]["name"]}
        selected = _select(objects, target)
        for obj in selected:
            _strategic_merge(obj, body)
    if not selected:
        raise ValueError(f"{directory}: patch target {target} matches nothing")


def _select(objects: list[Obj], target: Obj) -> list[Obj]:
    if set(target) - {"group", "version", "kind", "name", "namespace"}:
        raise Unsupported(f"patch target selectors {sorted(target)}")
    chosen = []
    for obj in objects:
        group, version = _group_version(obj["apiVersion"])
        meta = obj["metadata"]
        if (
            ("group" not in target or target["group"] == group)
            and ("version" not in target or target["version"] == version)
            and ("kind" not in target or target["kind"] == obj["kind"])
            and ("name" not in target or re.fullmatch(target["name"], meta["name"]))
            and ("namespace" not in target or target["namespace"] == meta.get("namespace", ""))
        ):
            chosen.append(obj)
    return chosen


def _strategic_merge(obj: Obj, patch: Obj) -> None:
    """A strategic merge of maps only (kustomize merges lists by merge keys, which we do not implement)."""
    for key, value in patch.items():
        if key.startswith("$"):
            raise Unsupported(f"strategic-merge directive {key}")
        if value is None:
            obj.pop(key, None)
        elif isinstance(value, list):
            raise Unsupported(f"a list ({key}) in a strategic-merge patch: use a JSON 6902 patch")
        elif isinstance(value, dict):
            if not isinstance(obj.get(key), dict):
                obj[key] = {}
            _strategic_merge(obj[key], value)
        else:
            obj[key] = value


def _json_patch(obj: Obj, operations: list[Obj]) -> None:
    """RFC 6902 add, remove, replace and test."""
    for operation in operations:
        op = operation["op"]
        parts = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        parent: Any = obj
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(operation["value"]))
            else:
                parent[last] = copy.deepcopy(operation["value"])
        elif op in ("remove", "replace", "test"):
            index: Any = int(last) if isinstance(parent, list) else last
            if isinstance(parent, dict) and last not in parent:
                raise ValueError(f"JSON patch {op}: no {operation['path']}")
            if op == "remove":
                del parent[index]
            elif op == "replace":
                parent[index] = copy.deepcopy(operation["value"])
            elif parent[index] != operation["value"]:
                raise ValueError(f"JSON patch test failed at {operation['path']}")
        else:
            raise Unsupported(f"JSON patch op {op}")


def _set_namespace(objects: list[Obj], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] in _NAMESPACE_REFERRERS:
            raise Unsupported(f"namespace for {obj['kind']}")
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace  # kustomize renames Namespace objects to the namespace
        elif obj["kind"] not in _CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace


def _add_labels(objects: list[Obj], spec: Obj) -> None:
    if set(spec) - {"pairs", "includeSelectors", "includeTemplates"}:
        raise Unsupported(f"labels options {sorted(spec)}")
    if spec.get("includeSelectors") or spec.get("includeTemplates"):
        raise Unsupported("labels with includeSelectors or includeTemplates")
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(spec["pairs"])


def _set_replicas(objects: list[Obj], spec: Obj) -> None:
    matched = [o for o in objects if o["kind"] in _SCALABLE and o["metadata"]["name"] == spec["name"]]
    if not matched:
        raise ValueError(f"replicas: nothing named {spec['name']}")
    for obj in matched:
        obj["spec"]["replicas"] = int(spec["count"])


def _split_image(image: str) -> tuple[str, str]:
    """``name`` and the rest (``:tag``, ``@digest`` or both)."""
    name, at, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon:] + at + digest
    return name, at + digest


def _containers(node: Any) -> Iterator[Obj]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _set_image(objects: list[Obj], spec: Obj) -> None:
    if set(spec) - {"name", "newName", "newTag", "digest"}:
        raise Unsupported(f"images options {sorted(spec)}")
    for obj in objects:
        for container in _containers(obj.get("spec")):
            name, rest = _split_image(container["image"])
            if name != spec["name"]:
                continue
            if "digest" in spec:
                rest = "@" + spec["digest"]
            elif "newTag" in spec:
                rest = ":" + str(spec["newTag"])
            container["image"] = spec.get("newName", name) + rest


# ------------------------------------------------------------------------------------------------------------
# Rendering and lookups
# ------------------------------------------------------------------------------------------------------------


@cache
def usable_kubectl() -> str | None:
    """kubectl, if it is on PATH and bundles kustomize 5 or newer (older ones lack components and labels)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    result = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30, check=False
    )
    try:
        version = json.loads(result.stdout).get("kustomizeVersion", "")
    except ValueError:
        return None
    match = re.match(r"v(\d+)\.", version)
    return kubectl if match and int(match.group(1)) >= 5 else None


def kubectl_kustomize(directory: Path) -> list[Obj]:
    kubectl = usable_kubectl()
    assert kubectl is not None, "no kubectl with kustomize 5 or newer"
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def renderer_name() -> str:
    forced = os.environ.get("BDURABLE_K8S_RENDERER", "")
    if forced not in ("", "mini", "kubectl"):
        raise ValueError(f"BDURABLE_K8S_RENDERER={forced!r}: use 'mini' or 'kubectl'")
    return forced or ("kubectl" if usable_kubectl() else "mini")


def render(directory: Path, renderer: str | None = None) -> list[Obj]:
    if (renderer or renderer_name()) == "kubectl":
        return kubectl_kustomize(directory)
    return mini_kustomize(directory)


# The release the blue/green test pretends is running now.
PREVIOUS_TAG = "0.9.0"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of k8s/ with overlays that switch production's optional components on, as docs/deploy.md says."""
    copied = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copied)

    def variant(name: str) -> tuple[Path, Obj]:
        shutil.copytree(copied / "overlays" / "production", copied / "overlays" / name)
        path = copied / "overlays" / name / "kustomization.yaml"
        return path, yaml.safe_load(path.read_text())

    # KEDA: add the component, and leave the dispatcher's replica count to it.
    path, k = variant("production+keda")
    k["components"] = [*k.get("components", []), "../../components/keda"]
    k["replicas"] = [r for r in k["replicas"] if r["name"] != "bdurable-dispatcher"]
    path.write_text(yaml.safe_dump(k, sort_keys=False))
    # Blue/green: add the component, with the previous release's image.
    path, k = variant("production+blue-green")
    k["components"] = [*k.get("components", []), "../../components/blue-green"]
    (current,) = k["images"]
    k["images"].append({"name": "b-durable-previous", "newName": current["newName"], "newTag": PREVIOUS_TAG})
    path.write_text(yaml.safe_dump(k, sort_keys=False))
    return copied


def target_dir(tree: Path, target: str) -> Path:
    return tree / "base" if target == "base" else tree / "overlays" / target


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Obj]]:
    return {target: render(target_dir(tree, target)) for target in TARGETS}


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) for every object that runs pods."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield obj, obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]
        elif obj["kind"] == "Pod":
            yield obj, obj


def role_deployments(objects: list[Obj]) -> dict[str, Obj]:
    """The Deployment of each role (``bdurable-<role>``), checking that its pods say which role they run."""
    found: dict[str, Obj] = {}
    for role in ROLES:
        deployments = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == f"bdurable-{role}"]
        if deployments:
            (found[role],) = deployments
            assert found[role]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == role
    return found


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels form, or a Service's plain map) matches these labels."""
    if "matchExpressions" in selector:
        raise AssertionError("matchExpressions: extend the test")
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def settings_map(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = named(objects, "ConfigMap", "bdurable-settings")["data"]
    return data


@cache
def crd_validator(filename: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / filename).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validation_errors(obj: Obj, version: str) -> list[str]:
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    schema = CRD_SCHEMAS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if schema is not None:
        return [
            f"{where}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in crd_validator(schema).iter_errors(obj)
        ]
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as e:
        return [f"{where} (Kubernetes {e.version}): {'.'.join(map(str, e.path)) or '(root)'}: {e.message}"]
    except kv.SchemaNotFoundError as e:
        return [f"{where}: no schema: {e.message}"]
    return []


# ------------------------------------------------------------------------------------------------------------
# The image
# ------------------------------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
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


def test_dockerfile_is_multi_stage_non_root_with_bdurable_entrypoint() -> None:
    instructions = dockerfile_instructions(K8S / "Dockerfile")
    global_args = dict(
        args.split("=", 1)
        for keyword, args in instructions[: [k for k, _ in instructions].index("FROM")]
        if keyword == "ARG"
    )
    build, runtime = stages(instructions)[-2:]
    assert len(stages(instructions)) == 2

    def base(stage: list[tuple[str, str]]) -> str:
        image = stage[0][1].split()[0]
        return re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], image)

    for stage in (build, runtime):
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base(stage)), base(stage)
    assert build[0][1].split()[-2:] == ["AS", "build"]
    runs = " ".join(args for keyword, args in build if keyword == "RUN")
    assert "pip wheel" in runs, "the first stage builds the wheels"
    assert "/wheels" in runs
    installs = [args for keyword, args in runtime if keyword == "RUN" and "pip install" in args]
    assert installs, "the runtime stage installs the package"
    assert all("--no-index" in a and "from=build" in a and "b-durable" in a for a in installs), installs

    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), f"USER {users[-1]}: numeric, so that runAsNonRoot can check it"
    assert int(uid) != 0, "not root"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    after_user = runtime[[i for i, (k, _) in enumerate(runtime) if k == "USER"][-1] + 1 :]
    assert not [k for k, _ in after_user if k == "RUN"], "nothing runs as root after USER, nor as the user"
    entrypoint = [args for keyword, args in runtime if keyword == "ENTRYPOINT"]
    assert entrypoint, "an ENTRYPOINT"
    assert json.loads(entrypoint[-1]) == ["bdurable"], 'exec-form ENTRYPOINT ["bdurable"]'
    assert "PYTHONPATH=/app" in " ".join(args for keyword, args in runtime if keyword == "ENV")

    ignore = (K8S / "Dockerfile.dockerignore").read_text().split()
    for needed in ("!pyproject.toml", "!shared/", "!services/"):
        assert needed in ignore, f"the build context must include {needed[1:]}"


def test_image_user_matches_manifests(rendered: dict[str, list[Obj]]) -> None:
    runtime = stages(dockerfile_instructions(K8S / "Dockerfile"))[-1]
    uid = int([args for keyword, args in runtime if keyword == "USER"][-1].split(":")[0])
    for deployment in role_deployments(rendered["production"]).values():
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


# ------------------------------------------------------------------------------------------------------------
# Rendering and schemas
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_renders_unique_objects(rendered: dict[str, list[Obj]], target: str) -> None:
    objects = rendered[target]
    assert objects
    ids = [_identity(o) for o in objects]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates(rendered: dict[str, list[Obj]], target: str, version: str) -> None:
    errors = [error for obj in rendered[target] for error in validation_errors(obj, version)]
    assert not errors, "\n".join(errors)


def test_validation_catches_mistakes(rendered: dict[str, list[Obj]]) -> None:
    """The validators are not vacuous: a misspelt field, a wrong type or an unknown kind fails."""
    deployment = copy.deepcopy(named(rendered["dev"], "Deployment", "bdurable-dispatcher"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert validation_errors(deployment, kv.latest_version())
    pdb = copy.deepcopy(named(rendered["dev"], "PodDisruptionBudget", "bdurable-dispatcher"))
    pdb["spec"]["maxUnavailable"] = [1]
    assert validation_errors(pdb, kv.latest_version())
    scaled = copy.deepcopy(named(rendered["production+keda"], "ScaledObject", "bdurable-dispatcher"))
    scaled["spec"]["triggers"][0]["metadata"]["listLenght"] = "5"
    assert validation_errors(scaled, kv.latest_version())
    assert validation_errors({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}}, "1.30")


@pytest.mark.parametrize("target", TARGETS)
def test_mini_renderer_matches_kubectl(tree: Path, target: str) -> None:
    if usable_kubectl() is None:
        pytest.skip("no kubectl with kustomize 5 or newer: nothing to compare the renderer with")

    def keyed(objects: list[Obj]) -> dict[tuple[str, str, str, str], Obj]:
        return {_identity(o): o for o in objects}

    ours = keyed(render(target_dir(tree, target), "mini"))
    theirs = keyed(render(target_dir(tree, target), "kubectl"))
    assert sorted(ours) == sorted(theirs)
    for identity, obj in ours.items():
        assert obj == theirs[identity], f"{identity} differs"


@pytest.mark.parametrize(
    "field",
    [
        "namePrefix: x-",
        "commonLabels: {a: b}",
        "configMapGenerator: []",
        "labels: [{pairs: {a: b}, includeSelectors: true}]",
    ],
)
def test_mini_renderer_refuses_what_it_does_not_implement(tmp_path: Path, field: str) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (tmp_path / "kustomization.yaml").write_text(f"resources: [cm.yaml]\n{field}\n")
    with pytest.raises(Unsupported):
        mini_kustomize(tmp_path)


# ------------------------------------------------------------------------------------------------------------
# Invariants
# ------------------------------------------------------------------------------------------------------------


def effective_security(pod: Obj, container: Obj) -> Obj:
    merged = dict(pod["spec"].get("securityContext", {}))
    merged.update(container.get("securityContext", {}))
    return merged


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_is_probed_bounded_and_locked_down(rendered: dict[str, list[Obj]], target: str) -> None:
    seen = 0
    for workload, pod in pod_specs(rendered[target]):
        spec = pod["spec"]
        assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            seen += 1
            where = f"{target}: {workload['metadata']['name']}/{container['name']}"
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
    assert seen >= len(ROLES)


@pytest.mark.parametrize("target", TARGETS)
def test_every_role_runs_with_health_endpoints_on_the_metrics_port(rendered: dict[str, list[Obj]], target: str) -> None:
    objects = rendered[target]
    port = int(settings_map(objects)["BDURABLE_METRICS_PORT"])
    deployments = role_deployments(objects)
    assert set(deployments) == set(ROLES)
    for role, deployment in deployments.items():
        template = deployment["spec"]["template"]
        (container,) = template["spec"]["containers"]
        assert container["args"][0] == role
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert {"configMapRef": {"name": "bdurable-settings"}} in container["envFrom"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert selects(deployment["spec"]["selector"], template["metadata"]["labels"])
        # Each role has a Service exposing its metrics port.
        labels = template["metadata"]["labels"]
        services = [s for s in of_kind(objects, "Service") if selects(s["spec"]["selector"], labels)]
        assert len(services) == 1, f"{role}: one Service expected"
        metrics = {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
        assert metrics in services[0]["spec"]["ports"]


@pytest.mark.parametrize("target", TARGETS)
def test_dispatcher_imports_the_app_and_outlasts_its_drain(rendered: dict[str, list[Obj]], target: str) -> None:
    dispatcher = role_deployments(rendered[target])["dispatcher"]
    pod = dispatcher["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--app") + 1] == "$(APP_MODULE)"
    env = {e["name"]: e for e in container["env"]}
    assert env["APP_MODULE"]["valueFrom"]["configMapKeyRef"] == {"name": "bdurable-app", "key": "APP_MODULE"}
    assert named(rendered[target], "ConfigMap", "bdurable-app")["data"]["APP_MODULE"]
    assert pod["terminationGracePeriodSeconds"] >= DISPATCHER_DRAIN_S + 10
    strategy = dispatcher["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("target", TARGETS)
def test_settings_come_from_the_configmap_and_the_redis_url_from_a_secret(
    rendered: dict[str, list[Obj]], target: str
) -> None:
    objects = rendered[target]
    settings = settings_map(objects)
    assert set(settings) >= REQUIRED_SETTINGS
    assert settings["BDURABLE_LOG_FORMAT"] == "json"
    for config_map in of_kind(objects, "ConfigMap"):
        assert "BDURABLE_REDIS_URL" not in config_map.get("data", {})
        assert not any(re.match(r"rediss?://", str(v)) for v in config_map.get("data", {}).values())
    for deployment in role_deployments(objects).values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            (url,) = [e for e in container["env"] if e["name"] == "BDURABLE_REDIS_URL"]
            assert "value" not in url, "never a literal Redis URL"
            assert url["valueFrom"]["secretKeyRef"] == {"name": "bdurable-redis", "key": "url"}
    for _, pod in pod_specs(objects):
        for container in pod["spec"]["containers"]:
            for var in container.get("env", []):
                assert not re.match(r"rediss?://", str(var.get("value", ""))), f"literal Redis URL in {var}"


@pytest.mark.parametrize("target", TARGETS)
def test_pdb_covers_the_dispatchers_only(rendered: dict[str, list[Obj]], target: str) -> None:
    objects = rendered[target]
    (pdb,) = of_kind(objects, "PodDisruptionBudget")
    deployments = role_deployments(objects)

    def pod_labels(role: str) -> dict[str, str]:
        labels: dict[str, str] = deployments[role]["spec"]["template"]["metadata"]["labels"]
        return labels

    assert selects(pdb["spec"]["selector"], pod_labels("dispatcher"))
    for role in ("scheduler", "reaper", "signal-bus"):
        assert not selects(pdb["spec"]["selector"], pod_labels(role))
    assert "maxUnavailable" in pdb["spec"], "maxUnavailable never blocks a drain at one replica"


@pytest.mark.parametrize("target", TARGETS)
def test_network_policy_allows_only_redis_and_dns_egress(rendered: dict[str, list[Obj]], target: str) -> None:
    objects = rendered[target]
    policies = [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "b-durable"
    ]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    for deployment in role_deployments(objects).values():
        assert selects(spec["podSelector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    allowed_egress = {(6379, "TCP"), (6380, "TCP"), (53, "UDP"), (53, "TCP")}
    seen = set()
    for rule in spec["egress"]:
        assert rule.get("ports"), "an egress rule without ports allows every port"
        for port in rule["ports"]:
            seen.add((port["port"], port.get("protocol", "TCP")))
    assert seen == allowed_egress
    for rule in spec["ingress"]:
        assert rule.get("ports") == [{"port": "metrics", "protocol": "TCP"}], "ingress only to metrics"


@pytest.mark.parametrize("target", TARGETS)
def test_selectors_are_disjoint_and_match_templates(rendered: dict[str, list[Obj]], target: str) -> None:
    workloads = list(pod_specs(rendered[target]))
    for workload, pod in workloads:
        assert selects(workload["spec"]["selector"], pod["metadata"]["labels"])
        for other, other_pod in workloads:
            if other is not workload:
                assert not selects(workload["spec"]["selector"], other_pod["metadata"]["labels"]), (
                    f"{workload['metadata']['name']} would adopt pods of {other['metadata']['name']}"
                )


@pytest.mark.parametrize("overlay", OVERLAY_TARGETS)
def test_overlay_puts_everything_in_its_namespace(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    (namespace,) = of_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace["metadata"]["name"], _identity(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "b-durable", _identity(obj)


@pytest.mark.parametrize("overlay", OVERLAY_TARGETS)
def test_references_resolve(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """Every ConfigMap and Secret a pod names exists, except the production Redis Secret that users create."""
    objects = rendered[overlay]
    external = {("Secret", "bdurable-redis")} if overlay.startswith("production") else set()
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    text = json.dumps([pod for _, pod in pod_specs(objects)])
    for kind, pattern in (
        ("ConfigMap", r'"configMap(?:Ref|KeyRef)": \{[^}]*"name": "([^"]+)"'),
        ("Secret", r'"secret(?:Ref|KeyRef)": \{[^}]*"name": "([^"]+)"'),
    ):
        for name in re.findall(pattern, text):
            assert (kind, name) in present | external, f"{overlay}: {kind} {name} is not defined"


def test_dev_runs_a_persistent_never_evicting_redis(rendered: dict[str, list[Obj]]) -> None:
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
    # The Secret's URL points at that Service, on its port.
    url = named(objects, "Secret", "bdurable-redis")["stringData"]["url"]
    match = re.fullmatch(r"redis://([\w.-]+):(\d+)/(\d+)", url)
    assert match, url
    assert match.group(1).split(".")[0] == service["metadata"]["name"]
    assert int(match.group(2)) in [p["port"] for p in service["spec"]["ports"]]
    # Only the roles may reach it.
    policy = named(objects, "NetworkPolicy", "redis")
    assert selects(policy["spec"]["podSelector"], redis["spec"]["template"]["metadata"]["labels"])
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "b-durable"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}},
    ]
    assert policy["spec"]["egress"] == []
    # One replica of each role is plenty for trying it out.
    for deployment in role_deployments(objects).values():
        assert deployment["spec"]["replicas"] == 1


def test_production_uses_an_external_redis_more_replicas_and_a_pinned_image(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["production"]
    assert not of_kind(objects, "StatefulSet"), "production uses a managed Redis"
    assert not of_kind(objects, "Secret"), "the Redis URL Secret is created by the user, never kept in git"
    deployments = role_deployments(objects)
    dev = role_deployments(rendered["dev"])
    for role, deployment in deployments.items():
        assert deployment["spec"]["replicas"] >= 2
        assert deployment["spec"]["replicas"] >= dev[role]["spec"]["replicas"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        _, version = _split_image(container["image"])
        assert version not in ("", ":latest"), f"{role}: pin the image version"
    assert deployments["dispatcher"]["spec"]["replicas"] > dev["dispatcher"]["spec"]["replicas"]
    (monitor,) = of_kind(objects, "PodMonitor")
    for deployment in deployments.values():
        assert selects(monitor["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]


def test_keda_scales_dispatchers_on_the_task_ready_queue(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production+keda"]
    scaled = named(objects, "ScaledObject", "bdurable-dispatcher")
    target = scaled["spec"]["scaleTargetRef"]
    dispatcher = named(objects, target["kind"], target["name"])
    assert dispatcher is role_deployments(objects)["dispatcher"]
    assert "replicas" not in dispatcher["spec"], "KEDA owns the replica count"
    assert scaled["spec"]["minReplicaCount"] >= 1, "never scale dispatchers to zero"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    prefix = settings_map(objects)["BDURABLE_PREFIX"]
    assert trigger["metadata"]["listName"].startswith(f"{{{prefix}:0}}:q:default:")
    auth = named(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} >= {"address", "password"}
    # Without the component there is no autoscaler and the replica count stays.
    assert not of_kind(rendered["production"], "ScaledObject")


def test_blue_green_runs_the_previous_release_beside_the_dispatcher(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production+blue-green"]
    current = named(objects, "Deployment", "bdurable-dispatcher")
    previous = named(objects, "Deployment", "bdurable-dispatcher-previous")
    # The same pod in every respect but its selector label and image: settings, probes, resources, security.
    (new_container,) = current["spec"]["template"]["spec"]["containers"]
    (old_container,) = previous["spec"]["template"]["spec"]["containers"]
    new_name, new_version = _split_image(new_container["image"])
    old_name, old_version = _split_image(old_container["image"])
    assert old_name == new_name
    assert old_version == f":{PREVIOUS_TAG}" != new_version

    def comparable(deployment: Obj) -> Obj:
        clone = copy.deepcopy(deployment)
        clone["metadata"]["name"] = "x"
        clone["spec"].pop("replicas")
        for labels in (clone["spec"]["selector"]["matchLabels"], clone["spec"]["template"]["metadata"]["labels"]):
            labels["b-durable/deployment"] = "x"
        clone["spec"]["template"]["spec"]["containers"][0]["image"] = "x"
        return clone

    assert comparable(previous) == comparable(current), "dispatcher-previous.yaml drifted from dispatcher.yaml"
    # The dispatchers' Service, PDB, NetworkPolicy and PodMonitor cover the previous release's pods too.
    labels = previous["spec"]["template"]["metadata"]["labels"]
    (pdb,) = of_kind(objects, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], labels)
    assert selects(named(objects, "Service", "bdurable-dispatcher")["spec"]["selector"], labels)
    assert selects(named(objects, "NetworkPolicy", "bdurable-roles")["spec"]["podSelector"], labels)
    (monitor,) = of_kind(objects, "PodMonitor")
    assert selects(monitor["spec"]["selector"], labels)


# ------------------------------------------------------------------------------------------------------------
# The guide
# ------------------------------------------------------------------------------------------------------------


def test_deploy_guide_names_only_existing_files_and_commands() -> None:
    text = DOCS.read_text()
    assert "kubectl apply -k k8s/overlays/dev" in text
    assert "Memory per waiting workflow: see docs/performance.md" in text
    for path in set(re.findall(r"\bk8s/[\w./+-]*[\w/]", text)):
        assert (ROOT / path).exists(), f"docs/deploy.md names {path}, which does not exist"
    for command in re.findall(r"^\s*bdurable ([a-z-]+)", text, flags=re.MULTILINE):
        assert command in {
            *ROLES,
            "dev",
            "start",
            "state",
            "result",
            "send-event",
            "publish-event",
            "cancel",
            "resume",
            "list",
            "history",
            "watch",
            "check",
            "doctor",
            "dlq",
        }, command
    # Every shell line in the guide at least parses.
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                shlex.split(line)
