"""The Helm chart in deploy/helm/quay-tag-operator: lint, rendering, values.schema.json, and
equality with the kustomize install.

helm is built from tools/helm/go.mod on first use, like the control plane. `helm lint` and
`helm template` need no cluster. The tests marked controlplane render the overlays with the
control plane's kubectl and send the chart's objects to the local API server in a server-side
dry run.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from quay_tag_testing import gobuild
from quay_tag_testing import helm as helm_tool
from quay_tag_testing.controlplane.server import ControlPlane

from .conftest import CRD_PATH, OVERLAYS, ROOT, render

CHART = ROOT / "deploy" / "helm" / "quay-tag-operator"
# The names of the kustomize install: a release of this name in this namespace renders objects
# with the overlays' names, so the two can be compared object by object.
RELEASE = "quay-tag-operator"
RELEASE_NAMESPACE = "quay-tag-operator"
RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
# The value of clusterWide that matches each overlay.
CLUSTER_WIDE = {"cluster-wide": True, "namespaced": False}


class Helm:
    """The helm executable, run with its cache, config and data folders in a temporary folder."""

    def __init__(self, executable: Path, home: Path) -> None:
        self.executable = executable
        self.environ = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            # `helm template` and `helm lint` never contact a cluster. A kubeconfig path that does
            # not exist keeps any other command from reaching one by accident.
            "KUBECONFIG": str(home / "kubeconfig"),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.executable), *args]
        result = subprocess.run(command, env=self.environ, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` failed with exit code {result.returncode}:\n{result.stderr}")
        return result

    def template(self, *options: str, namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
        """Return the objects that `helm template` renders for the chart with ``options``."""
        output = self.run("template", RELEASE, str(CHART), "--namespace", namespace, *options).stdout
        return [document for document in yaml.safe_load_all(output) if document]


@pytest.fixture(scope="session")
def helm(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    # Show the build progress instead of capturing it, because the first build takes minutes.
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    uncaptured = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with uncaptured:
        executable = helm_tool.ensure_helm()
    return Helm(executable, tmp_path_factory.mktemp("helm-home"))


def find(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(documents: list[dict[str, Any]]) -> list[str]:
    return sorted(document["kind"] for document in documents)


def container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = find(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Map each environment variable of the operator container to its value, or to its valueFrom."""
    return {variable["name"]: variable.get("value", variable.get("valueFrom")) for variable in container(documents)["env"]}


def normalized_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """Return ``rule`` with every list sorted, because RBAC gives no meaning to their order."""
    return {key: sorted(value) if isinstance(value, list) else value for key, value in rule.items()}


def normalized_rbac(documents: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Map (kind, namespace, name) of each RBAC object to its rules, roleRef and subjects, without labels."""
    objects = {}
    for document in documents:
        if document["kind"] not in RBAC_KINDS:
            continue
        metadata = document["metadata"]
        key = (document["kind"], metadata.get("namespace", ""), metadata["name"])
        rules = sorted((normalized_rule(rule) for rule in document.get("rules", [])), key=repr)
        subjects = sorted(document.get("subjects", []), key=repr)
        objects[key] = {"rules": rules, "roleRef": document.get("roleRef"), "subjects": subjects}
    return objects


def normalized_deployment_spec(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the Deployment's spec without the labels and selector, which the chart sets per release.

    A topology spread constraint must select the Deployment's own pods, and its selector is
    replaced by a placeholder once that is checked. Args are made comparable: the kustomize
    overlay passes `-n NAMESPACE` and the chart `--namespace NAMESPACE`. The env list becomes a
    mapping, because its order has no meaning when no variable refers to another.
    """
    spec: dict[str, Any] = copy.deepcopy(find(documents, "Deployment")["spec"])
    pod_selector = spec.pop("selector")
    spec["template"].pop("metadata")
    for constraint in spec["template"]["spec"].get("topologySpreadConstraints", []):
        assert constraint["labelSelector"] == pod_selector
        constraint["labelSelector"] = "the Deployment's selector"
    for item in spec["template"]["spec"]["containers"]:
        item["args"] = ["--namespace" if arg == "-n" else arg for arg in item["args"]]
        item["env"] = {variable["name"]: variable for variable in item["env"]}
    return spec


def values_for_overlay(plane: ControlPlane, overlay: str) -> list[str]:
    """Return `helm template` options that set what the overlay's Deployment hard-codes."""
    quay_url = env(render(plane, overlay))["QUAY_TAG_OPERATOR_QUAY_URL"]
    return ["--set", f"clusterWide={str(CLUSTER_WIDE[overlay]).lower()}", "--set", f"quayUrl={quay_url}"]


# Building helm: unit tests, no build.


def test_helm_version_read_from_go_mod() -> None:
    go_mod = (helm_tool.MODULE_DIR / "go.mod").read_text()

    assert helm_tool.helm_version(go_mod) == "v4.3.2"


def test_helm_version_rejects_other_module() -> None:
    with pytest.raises(gobuild.BuildError, match="helm.sh/helm/v4"):
        helm_tool.helm_version("module example\n\nrequire k8s.io/kubernetes v1.37.2\n")


def test_helm_cache_folder_beside_control_plane(tmp_path: Path) -> None:
    environ = {"QUAY_TAG_OPERATOR_CACHE": str(tmp_path)}

    folder = helm_tool.cache_folder(environ=environ)

    version = helm_tool.helm_version((helm_tool.MODULE_DIR / "go.mod").read_text())
    assert folder.parent == tmp_path / "helm"
    assert folder.name.startswith(f"{version}-")


def test_helm_bin_folder_without_helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAY_TAG_OPERATOR_HELM_BIN", str(tmp_path))

    with pytest.raises(gobuild.BuildError, match="QUAY_TAG_OPERATOR_HELM_BIN=.* is missing executable files"):
        helm_tool.ensure_helm()


def test_helm_build_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUAY_TAG_OPERATOR_HELM_BIN", raising=False)
    monkeypatch.setenv("QUAY_TAG_OPERATOR_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(gobuild.BuildError, match="`go` command was not found.*QUAY_TAG_OPERATOR_HELM_BIN"):
        helm_tool.ensure_helm()

    leftovers = [path.name for path in (tmp_path / "helm").iterdir() if not path.name.endswith(".lock")]
    assert leftovers == []


def test_helm_reports_pinned_version(helm: Helm) -> None:
    output = helm.run("version", "--template", "{{ .Version }}").stdout

    assert output == helm_tool.helm_version((helm_tool.MODULE_DIR / "go.mod").read_text())


# The chart's files.


def test_chart_crd_equals_source() -> None:
    copied = CHART / "crds" / CRD_PATH.name

    assert copied.read_bytes() == CRD_PATH.read_bytes(), f"copy {CRD_PATH} to {copied}"


def test_chart_crds_folder_has_only_the_crd() -> None:
    assert sorted(path.name for path in (CHART / "crds").iterdir()) == [CRD_PATH.name]


# helm lint and helm template.


@pytest.mark.parametrize("cluster_wide", ["true", "false"])
def test_chart_passes_helm_lint(helm: Helm, cluster_wide: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--set", f"clusterWide={cluster_wide}")

    assert "0 chart(s) failed" in result.stdout


def test_template_defaults_cluster_wide(helm: Helm) -> None:
    documents = helm.template()

    cluster_role = find(documents, "ClusterRole", RELEASE)
    binding = find(documents, "ClusterRoleBinding", RELEASE)
    assert "Namespace" not in kinds(documents)
    # The only namespaced RBAC objects of a cluster-wide install are those for the leader election Lease.
    namespaced_rbac = [d["metadata"]["name"] for d in documents if d["kind"] in ("Role", "RoleBinding")]
    assert all(name == f"{RELEASE}-leader-election" for name in namespaced_rbac), namespaced_rbac
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": RELEASE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NAMESPACE}]
    assert any("customresourcedefinitions" in rule["resources"] for rule in cluster_role["rules"])
    assert "--namespace" not in container(documents)["args"]


def test_template_namespaced_uses_role(helm: Helm) -> None:
    documents = helm.template("--set", "clusterWide=false")

    role = find(documents, "Role", RELEASE)
    binding = find(documents, "RoleBinding", RELEASE)
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert binding["roleRef"]["name"] == RELEASE
    # The operator turns kopf's scanning off with --namespace, so it needs no cluster-wide rights.
    assert "ClusterRole" not in kinds(documents)
    assert "ClusterRoleBinding" not in kinds(documents)
    args = container(documents)["args"]
    assert args[args.index("--namespace") + 1] == RELEASE_NAMESPACE


def test_template_namespaced_follows_release_namespace(helm: Helm) -> None:
    documents = helm.template("--set", "clusterWide=false", namespace="team-a")

    args = container(documents)["args"]
    assert args[args.index("--namespace") + 1] == "team-a"
    assert find(documents, "Role", RELEASE)["metadata"]["namespace"] == "team-a"
    assert find(documents, "RoleBinding", RELEASE)["subjects"][0]["namespace"] == "team-a"


def test_template_sets_operator_options(helm: Helm) -> None:
    documents = helm.template(
        "--set", "quayUrl=https://quay.internal:8443",
        "--set", "allowedHosts={quay.io,registry.internal:*}",
        "--set", "refreshInterval=1h30m",
        "--set", "maxConcurrentRequests=4",
        "--set-json", "maxRequestsPerSecond=2.5",
        "--set", "requestBurst=10",
        "--set-string", "labelSelector=shard=east",
        "--set", "logFormat=json",
    )  # fmt: skip

    variables = env(documents)
    assert variables["QUAY_TAG_OPERATOR_QUAY_URL"] == "https://quay.internal:8443"
    assert variables["QUAY_TAG_OPERATOR_ALLOWED_HOSTS"] == "quay.io,registry.internal:*"
    assert variables["QUAY_TAG_OPERATOR_REFRESH_INTERVAL"] == "1h30m"
    assert variables["QUAY_TAG_OPERATOR_MAX_CONCURRENT_REQUESTS"] == "4"
    assert variables["QUAY_TAG_OPERATOR_MAX_REQUESTS_PER_SECOND"] == "2.5"
    assert variables["QUAY_TAG_OPERATOR_REQUEST_BURST"] == "10"
    assert variables["QUAY_TAG_OPERATOR_LABEL_SELECTOR"] == "shard=east"
    assert container(documents)["args"][-2:] == ["--log-format", "json"]


def test_template_leaves_unset_options_out(helm: Helm) -> None:
    variables = env(helm.template("--set", "quayUrl="))

    assert "QUAY_TAG_OPERATOR_QUAY_URL" not in variables
    assert "QUAY_TAG_OPERATOR_ALLOWED_HOSTS" not in variables
    assert "QUAY_TAG_OPERATOR_REFRESH_INTERVAL" not in variables
    assert "QUAY_TAG_OPERATOR_MAX_CONCURRENT_REQUESTS" not in variables
    assert "QUAY_TAG_OPERATOR_MAX_REQUESTS_PER_SECOND" not in variables
    assert "QUAY_TAG_OPERATOR_REQUEST_BURST" not in variables
    assert "QUAY_TAG_OPERATOR_LABEL_SELECTOR" not in variables
    assert "QUAY_TAG_OPERATOR_METRICS_PORT" not in variables


def test_template_token_secret_mounted(helm: Helm) -> None:
    documents = helm.template("--set", "tokenSecretName=team-token")

    pod = find(documents, "Deployment")["spec"]["template"]["spec"]
    token_volume = next(volume for volume in pod["volumes"] if volume["name"] == "token")
    assert token_volume["secret"] == {"secretName": "team-token", "defaultMode": 0o440}
    assert env(documents)["QUAY_TAG_OPERATOR_TOKEN_FILE"] == "/var/run/secrets/quay-tag-operator/token"


def test_template_without_token_secret(helm: Helm) -> None:
    documents = helm.template("--set", "tokenSecretName=")

    pod = find(documents, "Deployment")["spec"]["template"]["spec"]
    assert [volume["name"] for volume in pod["volumes"]] == ["tmp"]
    assert [mount["name"] for mount in container(documents)["volumeMounts"]] == ["tmp"]
    assert "QUAY_TAG_OPERATOR_TOKEN_FILE" not in env(documents)


def test_template_metrics_service(helm: Helm) -> None:
    documents = helm.template("--set", "metrics.enabled=true", "--set", "metrics.port=9102")

    service = find(documents, "Service", f"{RELEASE}-metrics")
    deployment = find(documents, "Deployment")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9102, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {"name": "metrics", "containerPort": 9102, "protocol": "TCP"} in container(documents)["ports"]
    assert env(documents)["QUAY_TAG_OPERATOR_METRICS_PORT"] == "9102"


def test_template_metrics_off_has_no_service(helm: Helm) -> None:
    documents = helm.template("--set", "metrics.enabled=false")

    assert "Service" not in kinds(documents)
    assert [port["name"] for port in container(documents)["ports"]] == ["health"]


def test_template_leader_election(helm: Helm) -> None:
    documents = helm.template("--set", "leaderElection.enabled=true", "--set", "replicas=2")

    deployment = find(documents, "Deployment")
    role = find(documents, "Role", f"{RELEASE}-leader-election")
    binding = find(documents, "RoleBinding", f"{RELEASE}-leader-election")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert "--leader-election" in container(documents)["args"]
    lease_namespace = env(documents)["QUAY_TAG_OPERATOR_LEADER_ELECTION_NAMESPACE"]
    assert lease_namespace == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert {group for rule in role["rules"] for group in rule["apiGroups"]} == {"coordination.k8s.io"}
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"get", "create", "update"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NAMESPACE}]


def test_template_without_leader_election(helm: Helm) -> None:
    documents = helm.template("--set", "leaderElection.enabled=false", "--set", "replicas=1")

    deployment = find(documents, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-election" not in container(documents)["args"]
    assert "QUAY_TAG_OPERATOR_LEADER_ELECTION_NAMESPACE" not in env(documents)
    assert all("leases" not in rule["resources"] for doc in documents for rule in doc.get("rules", []))


def test_template_rejects_replicas_without_leader_election(helm: Helm) -> None:
    result = helm.run(
        "template", RELEASE, str(CHART), "--set", "leaderElection.enabled=false", "--set", "replicas=2", check=False
    )

    assert result.returncode != 0
    assert "replicas above 1 need leaderElection.enabled=true" in result.stderr


def test_template_scheduling_and_annotations(helm: Helm, tmp_path: Path) -> None:
    values = {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "operators", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "image": {"repository": "registry.example.com/quay-tag-operator", "tag": "0.2.0", "pullPolicy": "Always"},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))

    documents = helm.template("--values", str(values_file))

    template = find(documents, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    assert template["spec"]["nodeSelector"] == values["nodeSelector"]
    assert template["spec"]["tolerations"] == values["tolerations"]
    assert template["spec"]["affinity"] == values["affinity"]
    assert container(documents)["image"] == "registry.example.com/quay-tag-operator:0.2.0"
    assert container(documents)["imagePullPolicy"] == "Always"


def test_template_image_tag_defaults_to_app_version(helm: Helm) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

    assert container(helm.template())["image"] == f"quay-tag-operator:{app_version}"


def test_notes_name_secret_and_scope(helm: Helm) -> None:
    # A client-side dry run renders NOTES.txt without a cluster.
    output = helm.run(
        "install", RELEASE, str(CHART), "--namespace", "team-a", "--dry-run=client",
        "--set", "clusterWide=false", "--set", "tokenSecretName=team-token",
    ).stdout  # fmt: skip

    notes = output.split("NOTES:", 1)[1]
    assert "kubectl create secret generic team-token -n team-a --from-file=token=PATH" in notes
    assert "in the namespace team-a only" in notes
    assert "kubectl get repositorytags -n team-a" in notes
    assert "quayUrl is empty" in notes


# values.schema.json, through helm template.


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"replicas": -1}, "/replicas"),
        ({"replicas": "two"}, "/replicas"),
        ({"unknownKey": True}, "unknownKey"),
        ({"image": {"repository": "operator", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"registry": "quay.io"}}, "registry"),
        ({"clusterWide": "yes"}, "/clusterWide"),
        ({"quayUrl": "quay.example.com"}, "/quayUrl"),
        ({"quayUrl": "ftp://quay.example.com"}, "/quayUrl"),
        ({"tokenSecretName": "Not_A_Name"}, "/tokenSecretName"),
        ({"allowedHosts": "quay.io,quay.example.com"}, "/allowedHosts"),
        ({"allowedHosts": ["quay.io,quay.example.com"]}, "/allowedHosts/0"),
        ({"refreshInterval": "5 minutes"}, "/refreshInterval"),
        ({"maxConcurrentRequests": 0}, "/maxConcurrentRequests"),
        ({"maxConcurrentRequests": 257}, "/maxConcurrentRequests"),
        ({"maxRequestsPerSecond": -1}, "/maxRequestsPerSecond"),
        ({"requestBurst": 0}, "/requestBurst"),
        ({"labelSelector": "shard in (a, b)"}, "/labelSelector"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"metrics": {"enabled": True, "port": 70000}}, "/metrics/port"),
        ({"leaderElection": {"enabled": True, "leaseName": "other"}}, "leaseName"),
        ({"nodeSelector": {"zone": 1}}, "/nodeSelector/zone"),
        ({"podAnnotations": ["a"]}, "/podAnnotations"),
    ],
)
def test_schema_rejects_bad_value(helm: Helm, tmp_path: Path, values: dict[str, Any], path: str) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))

    result = helm.run("template", RELEASE, str(CHART), "--values", str(values_file), check=False)

    assert result.returncode != 0, result.stdout
    assert "quay-tag-operator:" in result.stderr
    assert path in result.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"quayUrl": "https://quay.example.com"},
        {"quayUrl": "http://127.0.0.1:8080/"},
        {"refreshInterval": "0"},
        {"refreshInterval": "90s"},
        {"maxConcurrentRequests": 256},
        {"maxRequestsPerSecond": 0},
        {"maxRequestsPerSecond": 0.5},
        {"labelSelector": "shard=east,!legacy"},
        {"allowedHosts": ["*", "http://quay.internal:8080", "quay.example.com:*"]},
        {"replicas": 0},
    ],
)
def test_schema_accepts_good_value(helm: Helm, tmp_path: Path, values: dict[str, Any]) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))

    result = helm.run("template", RELEASE, str(CHART), "--values", str(values_file), check=False)

    assert result.returncode == 0, result.stderr


# The chart against the kustomize install and the API server.


@pytest.mark.controlplane
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_equals_overlay(control_plane: ControlPlane, helm: Helm, overlay: str) -> None:
    from_kustomize = normalized_rbac(render(control_plane, overlay))
    from_chart = normalized_rbac(helm.template(*values_for_overlay(control_plane, overlay)))

    assert from_chart.keys() == from_kustomize.keys()
    for key, expected in from_kustomize.items():
        assert from_chart[key] == expected, key


@pytest.mark.controlplane
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_context_equals_overlay(control_plane: ControlPlane, helm: Helm, overlay: str) -> None:
    from_kustomize = find(render(control_plane, overlay), "Deployment")["spec"]["template"]["spec"]
    from_chart = find(helm.template(*values_for_overlay(control_plane, overlay)), "Deployment")["spec"]["template"]["spec"]

    assert from_chart["securityContext"] == from_kustomize["securityContext"]
    assert from_chart["containers"][0]["securityContext"] == from_kustomize["containers"][0]["securityContext"]


@pytest.mark.controlplane
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_equals_overlay(control_plane: ControlPlane, helm: Helm, overlay: str) -> None:
    """The chart's defaults give the overlay's Deployment: probes, volumes, resources, replicas and strategy."""
    from_kustomize = normalized_deployment_spec(render(control_plane, overlay))
    from_chart = normalized_deployment_spec(helm.template(*values_for_overlay(control_plane, overlay)))

    pod_kustomize = from_kustomize["template"]["spec"]
    pod_chart = from_chart["template"]["spec"]
    container_kustomize = pod_kustomize["containers"][0]
    container_chart = pod_chart["containers"][0]
    for field in ("livenessProbe", "readinessProbe", "volumeMounts", "resources", "ports", "args", "env", "image"):
        assert container_chart.get(field) == container_kustomize.get(field), field
    for field in ("volumes", "serviceAccountName", "automountServiceAccountToken"):
        assert pod_chart.get(field) == pod_kustomize.get(field), field
    assert from_chart == from_kustomize


@pytest.mark.controlplane
def test_object_names_equal_overlays(control_plane: ControlPlane, helm: Helm) -> None:
    for overlay in OVERLAYS:
        from_kustomize = {(d["kind"], d["metadata"]["name"]) for d in render(control_plane, overlay)}
        from_chart = {(d["kind"], d["metadata"]["name"]) for d in helm.template(*values_for_overlay(control_plane, overlay))}

        # The chart leaves the namespace to `helm install --create-namespace`.
        assert from_chart == from_kustomize - {("Namespace", RELEASE_NAMESPACE)}, overlay


@pytest.mark.controlplane
@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--set", "clusterWide=false"],
        ["--set", "leaderElection.enabled=true", "--set", "replicas=2", "--set", "metrics.enabled=true"],
    ],
    ids=["defaults", "namespaced", "leader-election-and-metrics"],
)
def test_rendered_chart_passes_server_dry_run(
    control_plane: ControlPlane, crd: None, helm: Helm, namespace: str, options: list[str]
) -> None:
    # The overlays' namespace enforces the restricted Pod Security Standard, so this one does too.
    control_plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    documents = helm.template("--set", "quayUrl=https://quay.example.com", *options, namespace=namespace)

    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents))

    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(documents), result.stdout
    assert "PodSecurity" not in result.stderr, result.stderr
