"""The deployment manifests of `deploy/`: Docker Compose and Kubernetes (control PLT-1).

Docker and Kubernetes do not run here, so the manifests are checked as documents: every
setting they name exists, no secret is written in them (secrets are references), every
container runs non-root on a read-only root filesystem, and every probe asks a route the app
serves. A planted copy of each rule's breach shows the rule fails.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from ramparts.config import Settings
from ramparts.crypto.scanner import scan_paths
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.web.app import create_app
from tests.live import temporary_kms
from tests.test_environments import KNOWN, SECRET_SETTINGS
from tests.test_routes import api_routes

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
WORKLOADS = {"Deployment", "Job", "CronJob", "StatefulSet", "DaemonSet"}
#: Variables the third-party images read (PostgreSQL's, Redis's) besides our settings.
IMAGE_VARIABLES = {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "PGDATA", "REDIS_PASSWORD"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|DATABASE_URL|REDIS_URL")
# A Compose value that is one reference to the operator's environment, nothing literal.
INTERPOLATED = re.compile(r"\$\{[A-Z][A-Z0-9_]*(?::?[?-][^}]*)?\}")
URL_PATH = re.compile(r"https?://[^/\s\"']+(/[\w./-]*)")
#: Which workloads' pods may connect to each workload; the API, public behind the load
#: balancer, is the one left open.
MAY_REACH = {
    "ramparts-pgbouncer": {"ramparts-api"},
    "ramparts-worker": set(),
    "ramparts-migrate-0-1-0": set(),
    "ramparts-reconcile": set(),
    "ramparts-backup": set(),
    "ramparts-drill": set(),
}
#: The workloads that hold the owner's URL (the prod guard refuses it to serve and worker).
OWNER_JOBS = {"migrate", "reconcile", "backup", "drill"}


@dataclass
class Container:
    where: str
    spec: dict[str, Any]
    pod: dict[str, Any]


def k8s_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def pod_template(document: dict[str, Any]) -> dict[str, Any]:
    spec = document["spec"]
    if document["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = pod_template(document)["spec"]
    return spec


def k8s_containers(documents: list[dict[str, Any]]) -> Iterator[Container]:
    for document in documents:
        if document["kind"] in WORKLOADS:
            pod = pod_spec(document)
            for spec in pod.get("initContainers", []) + pod["containers"]:
                yield Container(f"{document['metadata']['name']}/{spec['name']}", spec, pod)


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


# --- the rules, each returning what breaks it ----------------------------------------------------


def unknown_settings_k8s(documents: list[dict[str, Any]]) -> list[str]:
    named = [
        (container.where, variable["name"])
        for container in k8s_containers(documents)
        for variable in container.spec.get("env", [])
    ] + [
        (document["metadata"]["name"], name)
        for document in documents
        if document["kind"] == "ConfigMap"
        for name in document["data"]
        if name.startswith("RAMPARTS_")
    ]
    return [f"{where}: {name}" for where, name in named if not known(name)]


def unknown_settings_compose(document: dict[str, Any]) -> list[str]:
    return [
        f"{service}: {name}"
        for service, spec in document["services"].items()
        for name in spec.get("environment", {})
        if not known(name)
    ]


def known(name: str) -> bool:
    return name in KNOWN if name.startswith("RAMPARTS_") else name in IMAGE_VARIABLES


def open_ingress_k8s(documents: list[dict[str, Any]]) -> list[str]:
    """Every workload but the API is selected by an Ingress NetworkPolicy, and every policy
    selecting it admits only the pods of the workloads MAY_REACH names (no namespace, no
    address block, no empty selector, which would mean any pod)."""
    pods = {
        document["metadata"]["name"]: document
        for document in documents
        if document["kind"] in WORKLOADS
    }
    labels = {name: pod_template(document)["metadata"]["labels"] for name, document in pods.items()}

    def selects(selector: dict[str, Any], name: str) -> bool:
        return set(selector) <= {"matchLabels"} and (
            selector.get("matchLabels", {}).items() <= labels[name].items()
        )

    policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
    assert set(pods) - {"ramparts-api"} == set(MAY_REACH), "a workload without a MAY_REACH"
    found = []
    for name, allowed in MAY_REACH.items():
        guarding = [
            policy
            for policy in policies
            if "Ingress" in policy["spec"].get("policyTypes", [])
            and selects(policy["spec"]["podSelector"], name)
        ]
        if not guarding:
            found.append(f"{name}: reachable from any pod (no Ingress NetworkPolicy)")
        for policy in guarding:
            for rule in policy["spec"].get("ingress", []):
                peers = rule.get("from") or [{}]  # no `from`: any source
                for peer in peers:
                    selector = peer.get("podSelector", {})
                    admitted = {other for other in labels if selects(selector, other)}
                    if set(peer) != {"podSelector"} or not selector or not admitted <= allowed:
                        found.append(f"{name}: {policy['metadata']['name']} admits {peer}")
    return found


def literal_secrets_k8s(documents: list[dict[str, Any]]) -> list[str]:
    found = [
        f"{document['metadata']['name']}: a Secret with its data in the repository"
        for document in documents
        if document["kind"] == "Secret" and (document.get("data") or document.get("stringData"))
    ]
    for container in k8s_containers(documents):
        for variable in container.spec.get("env", []):
            secret = variable["name"] in SECRET_SETTINGS or SECRET_NAME.search(variable["name"])
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if secret and (reference is None or "value" in variable):
                found.append(f"{container.where}: {variable['name']} is not a secretKeyRef")
    for document in documents:
        if document["kind"] == "ConfigMap":
            for name, value in document["data"].items():
                if name in SECRET_SETTINGS:
                    found.append(f"{document['metadata']['name']}: {name} in a ConfigMap")
                elif name.startswith("RAMPARTS_") and re.search(r"://[^/@\s]*:[^@\s]+@", value):
                    found.append(f"{document['metadata']['name']}: {name} holds a password")
    return found


def literal_secrets_compose(document: dict[str, Any]) -> list[str]:
    return [
        f"{service}: {name} is not a ${{VARIABLE}} from the operator's environment"
        for service, spec in document["services"].items()
        for name, value in spec.get("environment", {}).items()
        if (name in SECRET_SETTINGS or SECRET_NAME.search(name))
        and not INTERPOLATED.fullmatch(str(value))
    ]


def unhardened_k8s(documents: list[dict[str, Any]]) -> list[str]:
    found = []
    for container in k8s_containers(documents):
        pod, own = (
            container.pod.get("securityContext", {}),
            container.spec.get("securityContext", {}),
        )
        merged = pod | own
        if merged.get("runAsNonRoot") is not True or merged.get("runAsUser", 1) == 0:
            found.append(f"{container.where}: may run as root")
        if own.get("readOnlyRootFilesystem") is not True:
            found.append(f"{container.where}: writable root filesystem")
        if own.get("allowPrivilegeEscalation") is not False:
            found.append(f"{container.where}: may escalate privileges")
        if own.get("capabilities", {}).get("drop") != ["ALL"]:
            found.append(f"{container.where}: keeps capabilities")
        if own.get("privileged"):
            found.append(f"{container.where}: privileged")
    for document in documents:
        if document["kind"] in WORKLOADS:
            pod = pod_spec(document)
            if pod.get("automountServiceAccountToken") is not False:
                found.append(f"{document['metadata']['name']}: mounts a service-account token")
            seccomp = pod.get("securityContext", {}).get("seccompProfile", {})
            if seccomp.get("type") != "RuntimeDefault":
                found.append(f"{document['metadata']['name']}: no RuntimeDefault seccomp profile")
    return found


def unhardened_compose(document: dict[str, Any]) -> list[str]:
    found = []
    for service, spec in document["services"].items():
        user = str(spec.get("user", "root"))
        if user.split(":", maxsplit=1)[0] in {"root", "0", ""}:
            found.append(f"{service}: may run as root")
        if spec.get("read_only") is not True:
            found.append(f"{service}: writable root filesystem")
        if "no-new-privileges:true" not in spec.get("security_opt", []):
            found.append(f"{service}: may escalate privileges")
        if spec.get("cap_drop") != ["ALL"] or spec.get("cap_add") or spec.get("privileged"):
            found.append(f"{service}: keeps capabilities")
    return found


def probe_paths_k8s(documents: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for container in k8s_containers(documents):
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.spec.get(kind)
            if probe is not None and "httpGet" in probe:
                yield container.where, probe["httpGet"]["path"]


def probe_paths_compose(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for service, spec in document["services"].items():
        test = " ".join(spec.get("healthcheck", {}).get("test", []))
        for path in URL_PATH.findall(test):
            yield service, path


# --- the manifests obey them ----------------------------------------------------------------------


def test_manifests_parse_and_hold_the_workloads_asked_for() -> None:
    documents = k8s_documents()
    kinds = {(document["kind"], document["metadata"]["name"]) for document in documents}
    assert {
        ("Deployment", "ramparts-api"),
        ("Service", "ramparts-api"),
        ("Deployment", "ramparts-worker"),
        ("Deployment", "ramparts-pgbouncer"),
        ("Service", "ramparts-pgbouncer"),
        ("ConfigMap", "ramparts-settings"),
        ("Service", "ramparts-api-metrics"),
        ("CronJob", "ramparts-reconcile"),
        ("CronJob", "ramparts-backup"),
        ("CronJob", "ramparts-drill"),
        ("PersistentVolumeClaim", "ramparts-backups"),
    } <= kinds
    assert any(kind == "Job" for kind, _ in kinds)
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.stem != "kustomization")
    services = compose()["services"]
    assert set(services) == {
        *("postgres", "redis", "pgbouncer", "migrate", "api", "worker"),
        *("reconcile", "backup", "drill"),
    }
    # The scheduled jobs are one-shot runs for the host's timers, never started by `up`.
    assert {s for s, spec in services.items() if "profiles" in spec} == OWNER_JOBS - {"migrate"}
    assert all(services[s]["restart"] == "no" for s in OWNER_JOBS)


def test_every_setting_named_exists() -> None:
    assert unknown_settings_k8s(k8s_documents()) == []
    assert unknown_settings_compose(compose()) == []


def test_no_secret_is_written_in_the_manifests() -> None:
    assert literal_secrets_k8s(k8s_documents()) == []
    assert literal_secrets_compose(compose()) == []
    files = [*DEPLOY.glob("*"), *K8S.glob("*")]
    assert [str(leak) for leak in scan_paths([f for f in files if f.is_file()], ROOT)] == []


def test_every_container_is_hardened() -> None:
    assert unhardened_k8s(k8s_documents()) == []
    assert unhardened_compose(compose()) == []


@pytest.mark.anyio
async def test_probes_ask_routes_the_app_serves(urls: DatabaseUrls, tmp_path: Path) -> None:
    database = Database(urls.app, pool_size=1)
    settings = Settings(home=tmp_path, secret_key=secrets.token_urlsafe(32))  # type: ignore[arg-type]
    app = create_app(settings, database, temporary_kms(tmp_path))
    await database.dispose()
    served = {route.path for route in api_routes(app.routes) if "GET" in route.methods}
    probes = [*probe_paths_k8s(k8s_documents()), *probe_paths_compose(compose())]
    assert {path for _, path in probes} == {"/healthz", "/readyz"}
    assert [(where, path) for where, path in probes if path not in served] == []
    # Every Ramparts container that serves HTTP is probed; the worker serves none.
    api = next(c for c in k8s_containers(k8s_documents()) if c.where == "ramparts-api/api")
    assert {
        api.spec["readinessProbe"]["httpGet"]["path"],
        api.spec["livenessProbe"]["httpGet"]["path"],
    } == {"/readyz", "/healthz"}


def test_only_the_api_reaches_pgbouncer_and_nothing_reaches_the_others() -> None:
    assert open_ingress_k8s(k8s_documents()) == []


def test_the_configmap_is_the_reviewed_prod_settings() -> None:
    [settings] = [
        d
        for d in k8s_documents()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ramparts-settings"
    ]
    assert settings["data"] == dotenv_values(DEPLOY / "prod.env")
    [pgbouncer] = [
        d
        for d in k8s_documents()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ramparts-pgbouncer"
    ]
    ini = (DEPLOY / "pgbouncer.ini").read_text()
    assert pgbouncer["data"]["pgbouncer.ini"] == ini
    assert re.search(r"(?m)^pool_mode = transaction$", ini)
    assert compose()["services"]["api"]["env_file"] == ["prod.env"]


def test_the_api_pools_through_pgbouncer_and_the_worker_does_not() -> None:
    """The design: the API's runtime URL is PgBouncer's; the worker LISTENs, so it connects
    straight to PostgreSQL; only the migration job and the scheduled jobs hold the owner's
    URL (the prod guard refuses it to `serve` and `worker`), and those need no runtime URL."""
    env = {
        container.where: {
            variable["name"]: variable.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
            or variable.get("value")
            for variable in container.spec.get("env", [])
        }
        for container in k8s_containers(k8s_documents())
    }
    assert env["ramparts-api/api"]["RAMPARTS_APP_DATABASE_URL"] == "app-database-url-pooled"
    assert env["ramparts-api/api"]["RAMPARTS_DATABASE_POOLER"] == "pgbouncer"
    assert "RAMPARTS_DATABASE_POOLER" not in env["ramparts-worker/worker"]
    assert env["ramparts-worker/worker"]["RAMPARTS_APP_DATABASE_URL"] == "app-database-url"
    owners = sorted(where for where, names in env.items() if "RAMPARTS_DATABASE_URL" in names)
    assert owners == [
        "ramparts-backup/backup",
        "ramparts-drill/drill",
        "ramparts-migrate-0-1-0/migrate",
        "ramparts-reconcile/reconcile",
    ]
    assert {env[where]["RAMPARTS_DATABASE_URL"] for where in owners} == {"owner-database-url"}
    assert [w for w in owners if "RAMPARTS_APP_DATABASE_URL" in env[w]] == [
        "ramparts-migrate-0-1-0/migrate"  # it sets the runtime role's password
    ]
    services = compose()["services"]
    assert "PGBOUNCER" in services["api"]["environment"]["RAMPARTS_APP_DATABASE_URL"].upper()
    assert services["api"]["environment"]["RAMPARTS_DATABASE_POOLER"] == "pgbouncer"
    assert "RAMPARTS_DATABASE_POOLER" not in services["worker"]["environment"]
    assert "@postgres:" in services["worker"]["environment"]["RAMPARTS_APP_DATABASE_URL"]
    assert {
        s for s, spec in services.items() if "RAMPARTS_DATABASE_URL" in spec.get("environment", {})
    } == OWNER_JOBS


# --- and each rule fails on its breach ----------------------------------------------------------


def planted(edit: Any) -> list[dict[str, Any]]:
    documents = copy.deepcopy(k8s_documents())
    edit(documents)
    return documents


def api_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c.spec for c in k8s_containers(documents) if c.where == "ramparts-api/api")


def test_each_rule_fails_on_a_planted_breach() -> None:
    def misspelt(documents: list[dict[str, Any]]) -> None:
        api_container(documents)["env"].append({"name": "RAMPARTS_SECRET_KY", "value": "x"})

    assert unknown_settings_k8s(planted(misspelt)) == ["ramparts-api/api: RAMPARTS_SECRET_KY"]

    def literal(documents: list[dict[str, Any]]) -> None:
        [variable] = [
            v for v in api_container(documents)["env"] if v["name"] == "RAMPARTS_SECRET_KEY"
        ]
        variable.pop("valueFrom")
        variable["value"] = secrets.token_urlsafe(32)

    assert literal_secrets_k8s(planted(literal)) == [
        "ramparts-api/api: RAMPARTS_SECRET_KEY is not a secretKeyRef"
    ]

    def rooted(documents: list[dict[str, Any]]) -> None:
        api_container(documents)["securityContext"]["readOnlyRootFilesystem"] = False
        api_container(documents)["securityContext"]["runAsUser"] = 0

    assert unhardened_k8s(planted(rooted)) == [
        "ramparts-api/api: may run as root",
        "ramparts-api/api: writable root filesystem",
    ]

    def unprobed(documents: list[dict[str, Any]]) -> None:
        api_container(documents)["livenessProbe"]["httpGet"]["path"] = "/health"

    assert ("ramparts-api/api", "/health") in set(probe_paths_k8s(planted(unprobed)))

    def unguarded(documents: list[dict[str, Any]]) -> None:
        documents[:] = [
            d
            for d in documents
            if d["metadata"]["name"] != "ramparts-pgbouncer" or d["kind"] != "NetworkPolicy"
        ]

    assert open_ingress_k8s(planted(unguarded)) == [
        "ramparts-pgbouncer: reachable from any pod (no Ingress NetworkPolicy)"
    ]

    def widened(documents: list[dict[str, Any]]) -> None:
        [policy] = [
            d
            for d in documents
            if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "ramparts-worker"
        ]
        policy["spec"]["ingress"] = [{"from": [{"namespaceSelector": {}}]}, {"ports": []}]

    assert open_ingress_k8s(planted(widened)) == [
        "ramparts-worker: ramparts-worker admits {'namespaceSelector': {}}",
        "ramparts-worker: ramparts-worker admits {}",
    ]

    document = compose()
    document["services"]["worker"]["environment"]["RAMPARTS_SECRET_KEY"] = secrets.token_urlsafe(32)
    document["services"]["redis"].pop("read_only")
    document["services"]["redis"]["user"] = "0:0"
    assert literal_secrets_compose(document) == [
        "worker: RAMPARTS_SECRET_KEY is not a ${VARIABLE} from the operator's environment"
    ]
    assert unhardened_compose(document) == [
        "redis: may run as root",
        "redis: writable root filesystem",
    ]

    def with_token(documents: list[dict[str, Any]]) -> None:
        for container in k8s_containers(documents):
            container.pod["automountServiceAccountToken"] = True
            break

    assert unhardened_k8s(planted(with_token)) == ["ramparts-api: mounts a service-account token"]
