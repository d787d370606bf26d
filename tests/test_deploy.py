"""The Kubernetes manifests in deploy/k8s, as shipped: valid objects of the Kubernetes API, pods that pass the Pod
Security Standards' "restricted" profile, and container args that the orchestrator accepts with the registry the
shipped ConfigMap holds, writing their outputs onto the volumes the pod mounts.

Offline: the API schemas come inside the kubernetes-validate wheel (a dev dependency); nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleetkit import ROOT
from kubernetes_validate import utils as kubernetes_schemas

from orchestrator.connection import ABORT_CANCEL_S
from orchestrator.devserver import free_port
from orchestrator.settings import BUILTIN, Budgets, parse_duration

K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
# The oldest Kubernetes the manifests are written for (backoffLimitPerIndex: 1.29) and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_schemas.latest_version())
ORCHESTRATOR_IMAGE = "registry.example.internal/platform/orchestrator:"
WORKDIR = "/app"  # the image's working directory: /app/migrations are the migrations it ships (deploy/Dockerfile)
# What Kubernetes puts into the fieldRef variables the manifests declare, for the runs below.
FIELD_VALUES = {
    "metadata.labels['job-name']": "orchestrator-test-job",
    "metadata.annotations['batch.kubernetes.io/job-completion-index']": "0",
}
OUTPUT_FLAGS = ("--report", "--junit", "--html", "--metrics")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}:{d['kind']}", d) for path in MANIFESTS for d in documents(path)]


def pod_template(document: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template of a workload (its `metadata` and `spec`); None for objects that run nothing."""
    kind, spec = document["kind"], document.get("spec", {})
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]  # type: ignore[no-any-return]
    if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return spec["template"]  # type: ignore[no-any-return]
    if kind == "Pod":
        return document
    assert kind in ("ConfigMap", "PersistentVolumeClaim", "Service", "Secret"), f"which pods does a {kind} run?"
    return None


def workloads() -> list[tuple[str, dict[str, Any]]]:
    return [(name, d) for name, d in all_documents() if pod_template(d) is not None]


def config_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """What config.yaml and the Secrets' files define, by (kind, name)."""
    return {(d["kind"], d["metadata"]["name"]): d for _, d in all_documents() if d["kind"] in ("ConfigMap", "Secret",
            "PersistentVolumeClaim")}  # fmt: skip


# --- 1. valid Kubernetes objects ------------------------------------------------------------------------------


def test_there_are_manifests_to_check() -> None:
    names = {path.name for path in MANIFESTS}
    assert {"config.yaml", "rollout-job.yaml", "audit-cronjob.yaml", "template-cronjob.yaml", "serve.yaml",
            "serve-token.yaml"} <= names  # fmt: skip
    assert len(workloads()) >= 6


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("name", "document"), all_documents(), ids=[n for n, _ in all_documents()])
def test_every_manifest_is_a_valid_kubernetes_object(name: str, document: dict[str, Any], version: str) -> None:
    # strict: an unknown field (a typo such as `securityContex`) is an error, not silently dropped by the server.
    kubernetes_schemas.validate(document, version, strict=True)


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    [job] = documents(K8S / "rollout-job.yaml")
    job["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_schemas.ValidationError, match="securityContex"):
        kubernetes_schemas.validate(job, KUBERNETES_VERSIONS[0], strict=True)


# --- 2. Pod Security Standards, "restricted" --------------------------------------------------------------------

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (the profile of Kubernetes 1.29+)
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}  # fmt: skip
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(template: dict[str, Any]) -> list[str]:
    """What in a pod template the "restricted" profile refuses (its baseline rules included), plus our own two
    rules: a read-only root filesystem and no service-account token (the orchestrator talks to PostgreSQL only)."""
    pod = template["spec"]
    pod_security = pod.get("securityContext", {})
    containers = [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]
    found = []
    # baseline
    found += [f"{key}: true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {', '.join(sorted(kinds - RESTRICTED_VOLUMES))} is not allowed")
    found += [f"sysctl {s['name']}" for s in pod_security.get("sysctls", []) if s["name"] not in SAFE_SYSCTLS]
    for key, value in (template.get("metadata", {}).get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            found.append(f"AppArmor annotation {key}: {value}")
    for where, security in [("pod", pod_security)] + [(c["name"], c.get("securityContext", {})) for c in containers]:
        if security.get("windowsOptions", {}).get("hostProcess"):
            found.append(f"{where}: windowsOptions.hostProcess")
        selinux = security.get("seLinuxOptions", {})
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{where}: seLinuxOptions {selinux}")
        if security.get("appArmorProfile", {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: appArmorProfile {security['appArmorProfile']}")
        if security.get("seccompProfile", {}).get("type") == "Unconfined":
            found.append(f"{where}: seccompProfile Unconfined")
        if security.get("runAsNonRoot") is False:
            found.append(f"{where}: runAsNonRoot false")
        if security.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
    for c in containers:
        name, security = c["name"], c.get("securityContext", {})
        if security.get("privileged"):
            found.append(f"{name}: privileged")
        if security.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount {security['procMount']}")
        found += [f"{name}: hostPort {p['hostPort']}" for p in c.get("ports", []) if p.get("hostPort")]
        # restricted
        capabilities = security.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities.drop lacks ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities.add {capabilities['add']}")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        # The profile allows an unset runAsUser (the image's USER then decides); we state the UID explicitly.
        if not security.get("runAsUser", pod_security.get("runAsUser")):
            found.append(f"{name}: runAsUser is not set to a non-zero UID")
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is {seccomp or 'not set'}, not RuntimeDefault or Localhost")
        # ours
        if security.get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: readOnlyRootFilesystem is not true")
    if pod.get("automountServiceAccountToken") is not False:
        found.append("automountServiceAccountToken is not false")
    return found


@pytest.mark.parametrize(("name", "document"), workloads(), ids=[n for n, _ in workloads()])
def test_every_pod_passes_the_restricted_pod_security_profile(name: str, document: dict[str, Any]) -> None:
    template = pod_template(document)
    assert template is not None
    assert restricted_violations(template) == []


def _good_pod() -> dict[str, Any]:
    [job] = documents(K8S / "rollout-job.yaml")
    return copy.deepcopy(job["spec"]["template"])


def _container(template: dict[str, Any]) -> dict[str, Any]:
    return template["spec"]["containers"][0]  # type: ignore[no-any-return]


# Each breaks one rule; the checker must see every one (it would pass anything if it read the wrong keys).
BREAKAGES = {
    "hostPath volume": lambda t: t["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/var/lib/x"}}),
    "no seccomp profile": lambda t: t["spec"]["securityContext"].pop("seccompProfile"),
    "seccomp unconfined": lambda t: _container(t)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
    "service-account token": lambda t: t["spec"].pop("automountServiceAccountToken"),
    "root": lambda t: _container(t)["securityContext"].update(runAsUser=0),
    "runAsNonRoot unset": lambda t: t["spec"]["securityContext"].pop("runAsNonRoot"),
    "no UID": lambda t: t["spec"]["securityContext"].pop("runAsUser"),
    "privilege escalation": lambda t: _container(t)["securityContext"].pop("allowPrivilegeEscalation"),
    "capabilities kept": lambda t: _container(t)["securityContext"].pop("capabilities"),
    "capability added": lambda t: _container(t)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
    "writable root": lambda t: _container(t)["securityContext"].pop("readOnlyRootFilesystem"),
    "privileged": lambda t: _container(t)["securityContext"].update(privileged=True),
    "host network": lambda t: t["spec"].update(hostNetwork=True),
    "host port": lambda t: _container(t).update(ports=[{"containerPort": 80, "hostPort": 80}]),
    "unsafe sysctl": lambda t: t["spec"]["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_pod_security_check_sees_each_broken_rule(breakage: str) -> None:
    template = _good_pod()
    assert restricted_violations(template) == []
    BREAKAGES[breakage](template)
    assert restricted_violations(template) != []


# --- 3. the containers' args, run -------------------------------------------------------------------------------


def orchestrator_containers(service: bool = False) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(id, workload, container) for every container that runs the orchestrator's image: the commands that run to
    an end, or (`service`) those that run `orchestrator serve`."""
    for name, document in workloads():
        template = pod_template(document)
        assert template is not None
        for container in template["spec"]["containers"]:
            if container["image"].startswith(ORCHESTRATOR_IMAGE) and ("serve" in container["args"]) == service:
                yield f"{name}:{container['name']}", document, container


def completion_indexes(document: dict[str, Any]) -> list[str]:
    """Each pod of an Indexed Job gets its own index: run them all (each shard of the shipped registry)."""
    spec = document.get("spec", {})
    if document["kind"] == "Job" and spec.get("completionMode") == "Indexed":
        return [str(i) for i in range(spec["completions"])]
    return [FIELD_VALUES["metadata.annotations['batch.kubernetes.io/job-completion-index']"]]


RUNS = [
    (f"{cid}[{index}]", document, container, index)
    for cid, document, container in orchestrator_containers()
    for index in completion_indexes(document)
]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and subPathExpr: a declared variable is replaced, $$ is a `$`, anything
    else stays as written."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


class Pod:
    """A pod's container on this machine: its volumes as directories under `base`, its environment."""

    def __init__(self, base: Path, document: dict[str, Any], container: dict[str, Any], index: str) -> None:
        template = pod_template(document)
        assert template is not None
        defined = config_objects()
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        fields = {**FIELD_VALUES, "metadata.annotations['batch.kubernetes.io/job-completion-index']": index}
        self.env: dict[str, str] = {}
        for variable in container.get("env", []):
            if "value" in variable:
                self.env[variable["name"]] = variable["value"]
            elif "secretKeyRef" in variable["valueFrom"]:
                ref = variable["valueFrom"]["secretKeyRef"]
                self.env[variable["name"]] = defined[("Secret", ref["name"])]["stringData"][ref["key"]]
            else:
                self.env[variable["name"]] = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        self.secrets = [s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s]
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                self.env.update(defined[("ConfigMap", source["configMapRef"]["name"])]["data"])
        self.mounts: dict[str, tuple[Path, bool]] = {}  # mountPath -> (directory, read-only)
        self.registry_text = ""
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            directory = base / mount["name"]
            if "subPathExpr" in mount:
                directory = directory / expand(mount["subPathExpr"], self.env)
            elif "subPath" in mount:
                directory = directory / mount["subPath"]
            directory.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                config_map = defined[("ConfigMap", volume["configMap"]["name"])]
                items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in config_map["data"]]
                for item in items:
                    (directory / item["path"]).write_text(config_map["data"][item["key"]])
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in defined, f"claim {claim} is not in config.yaml"
            else:
                assert "emptyDir" in volume, f"volume {mount['name']}: not a ConfigMap, a PVC or an emptyDir"
            self.mounts[mount["mountPath"]] = (directory, mount.get("readOnly", False))

    def local(self, path: str) -> tuple[str, bool | None]:
        """A path in the container as a path here, and whether it is on a read-only mount (None: on the image's
        read-only root filesystem, /app and its migrations included)."""
        for mount_path in sorted(self.mounts, key=len, reverse=True):
            if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
                directory, read_only = self.mounts[mount_path]
                return str(directory) + path[len(mount_path) :], read_only
        if path == WORKDIR or path.startswith(WORKDIR + "/"):
            return str(ROOT) + path[len(WORKDIR) :], None
        return path, None

    def arg(self, arg: str) -> str:
        arg = expand(arg, self.env)
        flag, equals, value = arg.partition("=")
        if equals and value.startswith("/"):
            return f"{flag}={self.local(value)[0]}"
        return arg


def registry_nowhere(pod: Pod, container: dict[str, Any]) -> dict[str, str]:
    """Point the pod's registry (the ConfigMap's) at local ports where nothing listens (no name is looked up);
    returns the password variables it refers to, each with a made-up value."""
    [registry_arg] = [a for a in container["args"] if a.startswith("--registry=")]
    registry = Path(pod.local(registry_arg.partition("=")[2])[0])
    text = registry.read_text()
    servers = sorted(set(re.findall(r"@([\w.-]+):\d+/", text)))
    assert servers, "the registry names no server"
    for server in servers:
        text = re.sub(rf"@{re.escape(server)}:\d+/", f"@127.0.0.1:{free_port()}/", text)
    registry.write_text(text)
    return {name: f"pw-{name.lower()}" for name in re.findall(r"\$\{(\w+)\}", text)}


def test_the_rollouts_and_the_template_job_push_their_metrics() -> None:
    pushing = {cid for cid, _, container in orchestrator_containers()
               if any(s.get("configMapRef", {}).get("name") == "orchestrator-metrics"
                      for s in container.get("envFrom", []))}  # fmt: skip
    assert pushing == {"rollout-job.yaml:Job:orchestrator", "rollout-indexed-job.yaml:Job:orchestrator",
                       "template-cronjob.yaml:CronJob:template"}  # fmt: skip
    assert config_objects()[("ConfigMap", "orchestrator-metrics")]["data"]["ORCHESTRATOR_PUSHGATEWAY"]


def test_every_orchestrator_container_is_run_below() -> None:
    assert {cid.split("[")[0] for cid, *_ in RUNS} >= {
        "rollout-job.yaml:Job:orchestrator",
        "rollout-indexed-job.yaml:Job:orchestrator",
        "audit-cronjob.yaml:CronJob:audit",
        "template-cronjob.yaml:CronJob:template",
    }


@pytest.mark.parametrize(("cid", "document", "container", "index"), RUNS, ids=[r[0] for r in RUNS])
def test_each_container_s_args_are_accepted_with_the_shipped_registry(
    tmp_path: Path, cid: str, document: dict[str, Any], container: dict[str, Any], index: str
) -> None:
    """The container's args, on this machine: its mounts are directories, the ConfigMap's registry is the one
    `--registry` reads. Exit 2 would be invalid input (a flag that does not exist, a registry the command refuses,
    an empty shard), found before any connection; the database servers are ports where nothing listens, so a run
    whose input is valid ends 1 (no school reached; the audit: 3, none could be audited) and still writes its
    outputs onto the pod's writable volumes."""
    pod = Pod(tmp_path, document, container, index)
    assert pod.secrets == ["school-db-passwords"]  # created out of band (deploy/README.md)
    passwords = registry_nowhere(pod, container)

    outputs = []
    for arg in container["args"]:
        flag, _, value = expand(arg, pod.env).partition("=")
        if flag in OUTPUT_FLAGS:
            local, read_only = pod.local(value)
            assert read_only is False, f"{flag} {value} is not on a writable volume (the root filesystem is read-only)"
            outputs.append(Path(local))
    args = [pod.arg(a) for a in container["args"]]
    pushes = bool(pod.env.get("ORCHESTRATOR_PUSHGATEWAY"))
    if pushes:  # the shipped Pushgateway, at a local port where nothing listens: the push is tried and fails
        pod.env["ORCHESTRATOR_PUSHGATEWAY"] = f"http://127.0.0.1:{free_port()}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_URL", "ORCHESTRATOR_PUSH"))}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL,
        env={**clean, **pod.env, **passwords},
    )  # fmt: skip
    assert done.returncode == (3 if "audit" in args else 1), f"{args}\n{done.stderr[-3000:]}"
    assert "cannot connect to" in done.stdout + done.stderr, "the run did try the (absent) servers"
    for output in outputs:
        assert output.is_file(), f"{output} was not written"
    if pushes:
        assert "metrics_not_pushed" in done.stderr, "the metrics were pushed to the ConfigMap's Pushgateway"
    assert not any(p in done.stderr for p in passwords.values())


# --- the grace after SIGTERM --------------------------------------------------------------------------------------

# After the tool's grace, the abort (connection.ABORT_CANCEL_S, twice) and the report still need time before SIGKILL.
GRACE_MARGIN_S = 2 * ABORT_CANCEL_S + 5
KUBERNETES_DEFAULT_GRACE_S = 30


def tool_grace(args: list[str]) -> float:
    """The --grace an orchestrator run is given (`--grace=X` or `--grace X`), else the built-in default."""
    for i, arg in enumerate(args):
        if arg.startswith("--grace="):
            return parse_duration(arg.partition("=")[2], "--grace")
        if arg == "--grace":
            return parse_duration(args[i + 1], "--grace")
    return Budgets().grace


@pytest.mark.parametrize(("name", "document"), workloads(), ids=[n for n, _ in workloads()])
def test_each_pod_outlives_the_tools_grace_by_a_margin(name: str, document: dict[str, Any]) -> None:
    spec = pod_template(document)["spec"]  # type: ignore[index]
    runs = [c for c in spec["containers"] if c["image"].startswith(ORCHESTRATOR_IMAGE)]
    period = spec.get("terminationGracePeriodSeconds", KUBERNETES_DEFAULT_GRACE_S)
    for container in runs:
        grace = tool_grace(container.get("args", []))
        assert period >= grace + GRACE_MARGIN_S, (
            f"{name}: terminationGracePeriodSeconds {period} leaves no margin after --grace {grace:g}s: SIGKILL "
            "would cut the abort or the report"
        )


def test_the_rollouts_let_long_migrations_finish() -> None:
    for path in ("rollout-job.yaml", "rollout-indexed-job.yaml"):
        [job] = documents(K8S / path)
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert tool_grace(container["args"]) >= BUILTIN.statement_timeout, path


def test_the_systemd_unit_outlives_the_tools_grace_by_a_margin() -> None:
    unit = (ROOT / "deploy" / "systemd" / "orchestrator-audit.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit, re.M | re.S)
    assert exec_start is not None
    [stop] = re.findall(r"^TimeoutStopSec=(\S+)$", unit, re.M)
    grace = tool_grace(exec_start.group(1).replace("\\\n", " ").split())
    assert parse_duration(stop, "TimeoutStopSec") >= grace + GRACE_MARGIN_S


# --- 4. the service: orchestrator serve --------------------------------------------------------------------------

SERVICES = list(orchestrator_containers(service=True))


def _serve() -> tuple[dict[str, Any], dict[str, Any]]:
    [(_, deployment, container)] = SERVICES
    return deployment, container


def test_the_service_is_a_deployment_behind_a_service() -> None:
    deployment, container = _serve()
    assert deployment["kind"] == "Deployment"
    [service] = [
        d for _, d in all_documents() if d["kind"] == "Service" and d["metadata"]["name"] == "orchestrator-serve"
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in ports
    # It listens on every address of the pod, at the port the Service and the probes name.
    [listen] = [a.partition("=")[2] for a in container["args"] if a.startswith("--listen=")]
    assert listen == f"0.0.0.0:{ports[port['targetPort']]}"


def test_the_service_s_probes_and_grace() -> None:
    deployment, container = _serve()
    ports = {p["name"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert container[probe]["httpGet"]["path"] == path
        assert container[probe]["httpGet"]["port"] in ports
    # Kubernetes kills the pod terminationGracePeriodSeconds after SIGTERM: later than the tool's own grace for
    # running onboardings, with room for the abort and the shutdown.
    assert (
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        >= tool_grace(container["args"]) + GRACE_MARGIN_S
    )


def test_the_service_s_token_comes_from_its_secret() -> None:
    _, container = _serve()
    [token] = [e for e in container["env"] if e["name"] == "ORCHESTRATOR_API_TOKEN"]
    ref = token["valueFrom"]["secretKeyRef"]
    secret = config_objects()[("Secret", ref["name"])]
    assert ref["key"] in secret["stringData"]
    # The placeholder is no token anyone could use: empty, so the service refuses to start until it is filled in.
    assert secret["stringData"][ref["key"]] == ""
    assert not any(a.startswith("--token") for a in container["args"])  # never on a command line (ps shows it)
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["school-db-passwords"]


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_service_s_args_serve_and_answer_the_probes(tmp_path: Path) -> None:
    """The container's args with the shipped registry (its servers: ports where nothing listens) and a token in
    place of the Secret's placeholder: the service starts, /healthz (liveness) answers 200 while /readyz (readiness)
    says 503 (no server answered), SIGTERM ends it with 0. The shipped placeholder itself is refused (exit 2)."""
    deployment, container = _serve()
    pod = Pod(tmp_path, deployment, container, "0")
    passwords = registry_nowhere(pod, container)
    port = free_port()
    # Here on the loopback and a free port, where the pod has 0.0.0.0:8080 (test_the_service_is_a_deployment_...).
    args = [f"--listen=127.0.0.1:{port}" if a.startswith("--listen=") else pod.arg(a) for a in container["args"]]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_URL", "ORCHESTRATOR_API"))}
    env = {**clean, **pod.env, **passwords}
    assert env["ORCHESTRATOR_API_TOKEN"] == ""  # the Secret as shipped
    refused = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                             timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL, env=env)  # fmt: skip
    assert refused.returncode == 2 and "API token" in refused.stderr, refused.stderr[-2000:]

    token = "t" * 32
    log = (tmp_path / "serve.log").open("wb")
    env["ORCHESTRATOR_API_TOKEN"] = token
    service = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], stdout=log, stderr=subprocess.STDOUT,
                               cwd=ROOT, stdin=subprocess.DEVNULL, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert service.poll() is None, (tmp_path / "serve.log").read_text()
            with contextlib.suppress(OSError):
                if _get(port, container["livenessProbe"]["httpGet"]["path"]) == 200:
                    break
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        assert _get(port, container["readinessProbe"]["httpGet"]["path"]) == 503
        assert _get(port, container["startupProbe"]["httpGet"]["path"]) == 200
    finally:
        service.send_signal(signal.SIGTERM)
        code = service.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()
    assert not any(p in (tmp_path / "serve.log").read_text() for p in [token, *passwords.values()])
