"""deploy/kubernetes: every manifest against the Kubernetes JSON schemas, the custom resources
against their CRDs' schemas, and the manifests against each other and against the app.

Schemas. Built-in kinds: ``kubernetes-validate`` (PyPI; it ships the JSON schemas of every
Kubernetes release, used here in strict mode: an unknown field is an error). KEDA's
ScaledObject/TriggerAuthentication and the Prometheus Operator's ServiceMonitor: the
``cloudcoil-models-keda`` and ``cloudcoil-models-prometheus-operator`` packages (PyPI),
pydantic models generated from those projects' CRDs; their JSON schema, with every object
closed to unknown fields, validates our documents. Nothing is vendored.

Settings. Every ``PULSE_*`` variable that the manifests or docker-compose.yml set must be a
setting the app reads (a ``Settings`` field, or ``<secret>_FILE``), and its value one the
app's own validation accepts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streams.rules_file import load_rules
from streams.settings import SECRETS, Settings, from_env
from tests.paths import ROOT

K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.29"  # the oldest Kubernetes the manifests are checked against
NAMESPACE = "customer-pulse"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")

# secret settings, which can also be given as PULSE_<NAME>_FILE
SECRET_SETTINGS = set(SECRETS)
# the values some settings allow (also checked by the app's validation below)
CONTRACT_CHOICES = {
    "PULSE_KAFKA_SECURITY_PROTOCOL": {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"},
    "PULSE_KAFKA_SASL_MECHANISM": {"", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"},
    "PULSE_ON_STATE_LOSS": {"halt", "rebuild"},
    "PULSE_ON_OFFSET_RESET": {"reset", "halt"},
}
# a setting whose value is a path the pod must have (mounted from a ConfigMap or Secret)
PATH_SETTINGS = re.compile(r"^PULSE_\w+(_FILE|_CAFILE|_CERTFILE|_KEYFILE|_CA_CERTS)$")


def env_name(field: str) -> str:
    return "PULSE_" + field.upper()


def readable_settings() -> set[str]:
    """Every PULSE_* variable the app reads (today's fields, the contract's, secret files)."""
    names = {f.name for f in fields(Settings)}
    return {env_name(n) for n in names} | {env_name(n) + "_FILE" for n in SECRET_SETTINGS}


# -- loading -----------------------------------------------------------------------------------


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.name}:{d['kind']}/{d['metadata']['name']}", d)
            for p in MANIFESTS for d in load(p)]


def applied() -> list[dict[str, Any]]:
    """What `kubectl apply -k` creates (the secret templates are applied by hand)."""
    return [d for p in MANIFESTS if p.name != "secrets.example.yaml" for d in load(p)]


def one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for _, d in documents()
              if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def secret_keys() -> dict[str, set[str]]:
    return {d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
            for d in load(K8S / "secrets.example.yaml")}


def config_map_keys() -> dict[str, set[str]]:
    return {d["metadata"]["name"]: set(d["data"]) for d in applied() if d["kind"] == "ConfigMap"}


def workloads() -> list[dict[str, Any]]:
    return [d for d in applied() if d["kind"] in ("StatefulSet", "Deployment")]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def container_env(workload: dict[str, Any]) -> dict[str, str | None]:
    """The container's PULSE_* environment: envFrom ConfigMaps, then env (None: valueFrom)."""
    c = container(workload)
    env: dict[str, str | None] = {}
    maps = {d["metadata"]["name"]: d for d in applied() if d["kind"] == "ConfigMap"}
    for source in c.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for e in c.get("env", []):
        env[e["name"]] = e.get("value")
    return env


# -- schemas -----------------------------------------------------------------------------------


def _closed(schema: Any) -> None:
    """Close every object schema that lists its properties (like kubeconform's strict mode)."""
    if isinstance(schema, dict):
        if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for v in schema.values():
            _closed(v)
    elif isinstance(schema, list):
        for v in schema:
            _closed(v)


@cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft202012Validator]:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    out = {}
    for model in (ScaledObject, TriggerAuthentication, ServiceMonitor):
        schema = model.model_json_schema(by_alias=True)
        _closed(schema)
        api = schema["properties"]["apiVersion"]["default"]
        kind = schema["properties"]["kind"]["default"]
        out[(api, kind)] = jsonschema.Draft202012Validator(schema)
    return out


def validate(doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``doc`` breaks its kind's schema."""
    crd = crd_validators().get((doc.get("apiVersion"), doc.get("kind")))  # type: ignore[arg-type]
    if crd is not None:
        crd.validate(doc)
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"no schema for {doc.get('apiVersion')} {doc.get('kind')}: {exc.message}")


@pytest.mark.parametrize("doc", [d for _, d in documents()], ids=[i for i, _ in documents()])
def test_every_manifest_is_valid_against_its_schema(doc: dict[str, Any]) -> None:
    validate(doc)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return change


_DELETE = object()
BROKEN = [
    # (kind, name, what is broken, change)
    ("StatefulSet", "pulse-worker", "grace period as text",
     _set("spec.template.spec.terminationGracePeriodSeconds", "sixty")),
    ("StatefulSet", "pulse-worker", "no selector", _set("spec.selector", _DELETE)),
    ("StatefulSet", "pulse-worker", "misspelt field",
     _set("spec.template.spec.containers.0.imagePulPolicy", "Always")),
    ("StatefulSet", "pulse-worker", "port as text",
     _set("spec.template.spec.containers.0.ports.0.containerPort", "6066")),
    ("Deployment", "pulse-notifier", "no containers", _set("spec.template.spec.containers",
                                                           _DELETE)),
    ("Service", "pulse-worker", "port without a number", _set("spec.ports.0.port", _DELETE)),
    ("NetworkPolicy", "pulse-worker", "unknown field in a port",
     _set("spec.ingress.0.ports.0.portRange", 2)),
    ("ScaledObject", "pulse-worker", "max replicas as text", _set("spec.maxReplicaCount", "8")),
    ("ScaledObject", "pulse-worker", "no scale target", _set("spec.scaleTargetRef", _DELETE)),
    ("ScaledObject", "pulse-worker", "trigger metadata must be strings",
     _set("spec.triggers.0.metadata.lagThreshold", 20000)),
    ("ScaledObject", "pulse-worker", "misspelt field", _set("spec.maxReplicas", 8)),
    ("TriggerAuthentication", "pulse-kafka", "secret ref without key",
     _set("spec.secretTargetRef.0.key", _DELETE)),
    ("ServiceMonitor", "customer-pulse", "interval as a number",
     _set("spec.endpoints.0.interval", 15)),
    ("ServiceMonitor", "customer-pulse", "no selector", _set("spec.selector", _DELETE)),
]


@pytest.mark.parametrize("kind, name, what, change", BROKEN,
                         ids=[f"{b[0]}: {b[2]}" for b in BROKEN])
def test_a_broken_manifest_fails_validation(kind: str, name: str, what: str,
                                            change: Callable[[dict[str, Any]], None]) -> None:
    doc = copy.deepcopy(one(kind, name))
    validate(doc)  # valid as written
    change(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_kustomization_applies_every_manifest_but_the_secret_templates() -> None:
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization" and k["namespace"] == NAMESPACE
    assert sorted(k["resources"]) == sorted(p.name for p in MANIFESTS
                                            if p.name != "secrets.example.yaml")
    for _, d in documents():
        assert d["kind"] == "Namespace" or d["metadata"]["namespace"] == NAMESPACE
    (image,) = k["images"]
    assert {container(w)["image"] for w in workloads()} == {image["name"]}
    assert "deploy/kubernetes/secrets.yaml" in (ROOT / ".gitignore").read_text().split()


def test_the_secret_templates_hold_placeholders_only() -> None:
    for d in load(K8S / "secrets.example.yaml"):
        assert d["kind"] == "Secret" and "data" not in d
        for key, value in d["stringData"].items():
            assert "REPLACE" in value, f"{d['metadata']['name']}.{key} looks like a real secret"


# -- settings ----------------------------------------------------------------------------------


def compose_env() -> dict[str, dict[str, str]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {name: {k: str(v) for k, v in (svc.get("environment") or {}).items()}
            for name, svc in compose["services"].items()}


def _compose_default(value: str) -> str:
    """``${VAR:-default}`` -> default (what compose uses when VAR is unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def set_variables() -> Iterator[tuple[str, str]]:
    """(where, name) of every PULSE_* variable the manifests and docker-compose.yml set."""
    for w in workloads():
        for name in container_env(w):
            yield f"{w['kind']}/{w['metadata']['name']}", name
    for service, env in compose_env().items():
        for name in env:
            yield f"docker-compose {service}", name


def test_every_pulse_variable_is_a_setting_the_app_reads() -> None:
    names = list(set_variables())
    assert len({n for _, n in names}) > 15
    assert all(n.startswith("PULSE_") or not n.startswith("PULSE") for _, n in names)
    readable = readable_settings()
    unknown = sorted((where, n) for where, n in names if n.startswith("PULSE_")
                     and n not in readable)
    assert not unknown, f"variables the app does not read: {unknown}"


def test_the_settings_check_catches_a_wrong_name() -> None:
    readable = readable_settings()
    assert "PULSE_PARTITIONS" in readable and "PULSE_API_TOKENS_FILE" in readable
    assert "PULSE_PARTITION" not in readable and "PULSE_GROUP_ID_FILE" not in readable


def _todays_settings(env: dict[str, str | None], skip: set[str]) -> dict[str, str]:
    names = {env_name(f.name) for f in fields(Settings)}
    # (a path the pod mounts is not here to check: PATH_SETTINGS are checked against the
    # ConfigMaps and Secrets instead)
    # a value from a Secret (valueFrom, or a mounted <secret>_FILE) is not in the manifest:
    # a stand-in of the right shape
    stand_in = "from-a-secret-0123456789"
    out = {k: v if v is not None else stand_in for k, v in env.items()
           if k in names and k not in skip and not PATH_SETTINGS.match(k)}
    for k in env:
        if k.endswith("_FILE") and k[:-5] in names:
            out[k[:-5]] = stand_in
    return out


def test_the_values_are_valid_settings() -> None:
    """The app's own validation accepts what each workload and compose service sets."""
    checked = 0
    envs = [container_env(w) for w in workloads()]
    envs += [{k: _compose_default(v) for k, v in env.items()}
             for env in compose_env().values()]
    for env in envs:
        for name, allowed in CONTRACT_CHOICES.items():
            assert env.get(name, "") in allowed | {""}, (name, env.get(name))
        values = _todays_settings(env, skip={"PULSE_RULES_FILE"})  # a path in the pod
        if values:
            from_env(values)  # SettingsError names the variable
            checked += 1
    assert checked >= 5


# -- the worker --------------------------------------------------------------------------------


def test_the_worker_is_a_statefulset_with_static_membership_probes_and_grace() -> None:
    sts = one("StatefulSet", "pulse-worker")
    assert "replicas" not in sts["spec"], "KEDA owns the replica count"
    pod = sts["spec"]["template"]["spec"]
    c = container(sts)
    assert c["command"] == ["pulse", "worker"]
    (instance,) = [e for e in c["env"] if e["name"] == "PULSE_INSTANCE_ID"]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    env = container_env(sts)
    port = int(env["PULSE_WEB_PORT"] or 0)
    (http,) = c["ports"]
    assert http["containerPort"] == port == Settings().web_port
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": http["name"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": http["name"]}
    # SIGTERM: room for the last batch, the Redis commit and leaving the group
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    # beyond loopback the API needs tokens: they come from a mounted Secret
    assert env["PULSE_WEB_HOST"] == "0.0.0.0"
    assert env["PULSE_API_TOKENS_FILE"] and "PULSE_API_TOKENS" not in env


def test_the_notifier_runs_pulse_notifier_with_its_webhooks_file() -> None:
    dep = one("Deployment", "pulse-notifier")
    c = container(dep)
    env = container_env(dep)
    assert c["command"] == ["pulse", "notifier"]
    (http,) = c["ports"]
    assert http["containerPort"] == int(env["PULSE_NOTIFIER_WEB_PORT"] or 0)
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert env["PULSE_WEBHOOKS_FILE"]
    assert env.get("PULSE_NOTIFIER_GROUP_ID") != env["PULSE_GROUP_ID"]
    # least privilege: no Redis password, no API tokens
    assert not {k for k in env if k.startswith("PULSE_REDIS") or k.startswith("PULSE_API")}


def _mounted_source(workload: dict[str, Any], path: str) -> tuple[str, str, str]:
    """(kind, name, key) of the ConfigMap or Secret key that ``path`` reads in the pod."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in container(workload)["volumeMounts"]:
        prefix = m["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            key = path[len(prefix):]
            v = volumes[m["name"]]
            if "secret" in v:
                return "Secret", v["secret"]["secretName"], key
            if "configMap" in v:
                return "ConfigMap", v["configMap"]["name"], key
    raise AssertionError(f"{workload['metadata']['name']}: nothing is mounted at {path}")


def test_every_file_a_setting_names_is_mounted_from_an_existing_key() -> None:
    secrets, maps = secret_keys(), config_map_keys()
    checked = 0
    for w in workloads():
        for name, value in container_env(w).items():
            if not (PATH_SETTINGS.match(name) or name in ("PULSE_RULES_FILE",
                                                           "PULSE_WEBHOOKS_FILE")):
                continue
            assert value, name
            kind, source, key = _mounted_source(w, value)
            keys = secrets if kind == "Secret" else maps
            assert key in keys.get(source, set()), f"{name}={value}: no key {key} in {source}"
            checked += 1
        for e in container(w).get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], e["name"]
    assert checked >= 7


def test_the_rules_and_webhooks_files_are_usable(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(one("ConfigMap", "pulse-rules")["data"]["rules.yaml"])
    load_rules(str(rules))  # RulesError names the field
    hooks = yaml.safe_load(one("ConfigMap", "pulse-webhooks")["data"]["webhooks.yaml"])
    notifier = one("Deployment", "pulse-notifier")
    secrets = secret_keys()
    assert set(hooks) == {"endpoints"} and hooks["endpoints"]
    for e in hooks["endpoints"]:
        assert e["url"].startswith("https://"), e["name"]
        assert e["streams"] and set(e["streams"]) <= {"alerts", "points", "engagement"}
        kind, source, key = _mounted_source(notifier, e["secret_file"])
        assert kind == "Secret" and key in secrets[source], e["name"]
        assert not {"secret", "secret_env"} & set(e), "secrets stay out of the ConfigMap"


# -- KEDA, monitoring, network -----------------------------------------------------------------


def test_keda_scales_the_workers_on_the_engine_groups_lag() -> None:
    so = one("ScaledObject", "pulse-worker")["spec"]
    env = container_env(one("StatefulSet", "pulse-worker"))
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                    "name": "pulse-worker"}
    # a pod runs PULSE_PROCESSES engines, each owning whole partitions (never "auto" here:
    # without a CPU limit it would count the node's cores)
    processes = int(env.get("PULSE_PROCESSES") or 1)
    assert so["maxReplicaCount"] * processes == int(env["PULSE_PARTITIONS"] or 0)
    assert 1 <= so["minReplicaCount"] <= so["maxReplicaCount"]
    (trigger,) = so["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == env["PULSE_GROUP_ID"]
    assert meta["bootstrapServers"] == env["PULSE_KAFKA_BOOTSTRAP"]
    assert "topic" not in meta  # the lag of every input topic of the group
    assert int(meta["lagThreshold"]) > 0
    protocol = env["PULSE_KAFKA_SECURITY_PROTOCOL"] or "PLAINTEXT"
    assert meta.get("tls", "disable") == ("enable" if "SSL" in protocol else "disable")
    sasl = {"": "none", "PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
            "SCRAM-SHA-512": "scram_sha512"}[env.get("PULSE_KAFKA_SASL_MECHANISM") or ""]
    assert meta.get("sasl", "none") == (sasl if "SASL" in protocol else "none")
    auth = one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    secrets = secret_keys()
    params = {r["parameter"] for r in auth["spec"]["secretTargetRef"]}
    assert {"username", "password", "ca"} <= params
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]], ref


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_servicemonitor_scrapes_worker_and_notifier_once_each() -> None:
    sm = one("ServiceMonitor", "customer-pulse")["spec"]
    services = [d for d in applied() if d["kind"] == "Service"
                and _selects(sm["selector"]["matchLabels"], d["metadata"]["labels"])]
    assert sorted(s["metadata"]["name"] for s in services) == ["pulse-notifier", "pulse-worker"]
    (endpoint,) = sm["endpoints"]
    assert endpoint["path"] == "/metrics"
    for s in services:
        (port,) = [p for p in s["spec"]["ports"] if p["name"] == endpoint["port"]]
        (w,) = [w for w in workloads()
                if _selects(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        (cport,) = [p for p in container(w)["ports"] if p["name"] == port["targetPort"]]
        annotations = w["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(cport["containerPort"])
        assert w["spec"]["template"]["spec"]["serviceAccountName"]


def test_network_policies_deny_by_default_and_open_only_what_is_needed() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in applied()
                if d["kind"] == "NetworkPolicy"}
    deny = policies.pop("default-deny")
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    kafka_port = int(container_env(one("StatefulSet", "pulse-worker"))
                     ["PULSE_KAFKA_BOOTSTRAP"].split(":")[-1])  # type: ignore[union-attr]
    for w in workloads():
        labels = w["spec"]["template"]["metadata"]["labels"]
        (spec,) = [p for p in policies.values() if _selects(p["podSelector"]["matchLabels"],
                                                               labels)]
        (web,) = container(w)["ports"]
        ingress_ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
        assert ingress_ports == {web["containerPort"]}, w["metadata"]["name"]
        sources = [s for rule in spec["ingress"] for s in rule["from"]]
        assert {"kubernetes.io/metadata.name": "monitoring"} in [
            s.get("namespaceSelector", {}).get("matchLabels") for s in sources]
        egress_ports = {(p.get("protocol", "TCP"), p["port"])
                        for rule in spec["egress"] for p in rule["ports"]}
        assert {("UDP", 53), ("TCP", 53), ("TCP", kafka_port)} <= egress_ports
    worker = policies["pulse-worker"]
    assert any(s.get("podSelector", {}).get("matchLabels") == {"customer-pulse/api-client": "true"}
               for rule in worker["ingress"] for s in rule["from"])
    assert ("TCP", 6379) in {(p["protocol"], p["port"]) for r in worker["egress"]
                             for p in r["ports"]}
    notifier = policies["pulse-notifier"]
    (public,) = [r for r in notifier["egress"] if any("ipBlock" in t for t in r["to"])]
    block = public["to"][0]["ipBlock"]
    assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(block["except"])
    assert [p["port"] for p in public["ports"]] == [443]
    assert not any(p["port"] == 6379 for r in notifier["egress"] for p in r["ports"])
