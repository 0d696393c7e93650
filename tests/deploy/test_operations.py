"""The operations story of `deploy/` (control PLT-1, PLT-4): Prometheus scrapes every API pod
with a bearer token from the platform's secret store; the scheduled jobs (reconcile, backup,
drill) run as the owner, under the prod profile, where a backup outlives its pod; every
Ramparts process of the manifests would start. Checked as documents, like tests/test_deploy.py,
whose helpers these are; a planted copy of each rule's breach shows the rule fails.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from dotenv import dotenv_values

from ramparts.backup.drill import parse_duration
from ramparts.cli import app as ramparts_cli
from ramparts.config import ConfigError, production_violations
from tests.test_config import STRONG_DB_PASSWORD, STRONG_KEY
from tests.test_deploy import (
    DEPLOY,
    K8S,
    Container,
    api_container,
    compose,
    k8s_containers,
    k8s_documents,
    planted,
    pod_spec,
    pod_template,
)
from tests.test_environments import STRONG_REDIS, settings_of

PROMETHEUS = DEPLOY / "prometheus.yml"
APP_VAULT_POLICY = DEPLOY / "vault" / "ramparts.hcl"
VAULT_PATH = re.compile(r'(?m)^path "([^"]+)"')
#: Stand-ins for what the secret store holds, by the key the workloads reference (Kubernetes)
#: or the variable the operator's environment sets (Compose): strong, as prod wants them.
SECRET_STANDINS = {
    "app-database-url": f"postgresql://ramparts_app:{STRONG_DB_PASSWORD}@postgres:5432/ramparts",
    "app-database-url-pooled": (
        f"postgresql://ramparts_app:{STRONG_DB_PASSWORD}@ramparts-pgbouncer:6432/ramparts"
    ),
    "owner-database-url": f"postgresql://postgres:{STRONG_DB_PASSWORD}@postgres:5432/ramparts",
    "redis-url": STRONG_REDIS,
    "secret-key": STRONG_KEY,
    "vault-role-id": "0f6b4c8e-role",
    "vault-secret-id": "7d1e9a2b-secret",  # pragma: allowlist secret
    "metrics-token": "Zr8xK2mQ7vN4pL9sT1wY6cB3dF0hJ5gA",  # pragma: allowlist secret
}
COMPOSE_STANDINS = {
    "RAMPARTS_DATABASE_URL": SECRET_STANDINS["owner-database-url"],
    "RAMPARTS_APP_DATABASE_URL": SECRET_STANDINS["app-database-url"],
    "RAMPARTS_APP_DATABASE_URL_POOLED": SECRET_STANDINS["app-database-url-pooled"],
    "RAMPARTS_REDIS_URL": SECRET_STANDINS["redis-url"],
    "RAMPARTS_SECRET_KEY": SECRET_STANDINS["secret-key"],
    "RAMPARTS_VAULT_ROLE_ID": SECRET_STANDINS["vault-role-id"],
    "RAMPARTS_VAULT_SECRET_ID": SECRET_STANDINS["vault-secret-id"],
    "RAMPARTS_METRICS_TOKEN": SECRET_STANDINS["metrics-token"],
}


def configmaps(documents: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"}


def ramparts_containers(documents: list[dict[str, Any]]) -> Iterator[Container]:
    return (c for c in k8s_containers(documents) if "/ramparts:" in c.spec["image"])


def ramparts_services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        service: spec
        for service, spec in document["services"].items()
        if "prod.env" in spec.get("env_file", [])
    }


def command_of(container: Container) -> str:
    """The Ramparts command a container runs (`serve`, `worker`, `backup`...)."""
    words = [*container.spec.get("command", []), *container.spec.get("args", [])]
    return next((w for w in words[1:] if not w.startswith("-")), "")


def k8s_environment(container: Container, documents: list[dict[str, Any]]) -> dict[str, str]:
    """What the container's process sees, with stand-ins for the secrets it references."""
    maps = configmaps(documents)
    env: dict[str, str] = {}
    for source in container.spec.get("envFrom", []):
        env |= maps[source["configMapRef"]["name"]]
    for variable in container.spec.get("env", []):
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        env[variable["name"]] = (
            SECRET_STANDINS[reference["key"]] if reference else str(variable["value"])
        )
    return env


def compose_environment(spec: dict[str, Any]) -> dict[str, str]:
    env = {name: value or "" for name, value in dotenv_values(DEPLOY / "prod.env").items()}
    for name, value in spec.get("environment", {}).items():
        reference = re.fullmatch(r"\$\{([A-Z0-9_]+)[:?-].*\}", str(value))
        env[name] = COMPOSE_STANDINS[reference.group(1)] if reference else str(value)
    return env


def prod_refusals(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *, guarded: bool
) -> list[str]:
    """Why this environment would not start under the prod profile: settings that do not
    load, or (for the processes that run the production guard) its violations."""
    try:
        settings = settings_of(env, monkeypatch)
    except ConfigError as exc:
        return [str(exc)]
    return production_violations(settings, demo_data_present=False) if guarded else []


#: The commands that run the production guard (and so must not hold the owner's URL).
GUARDED = {"serve", "worker"}


def home_breaches_k8s(documents: list[dict[str, Any]]) -> list[str]:
    """RAMPARTS_HOME is a writable emptyDir in every Ramparts container: the root filesystem is
    read-only, the serving workers keep their multiprocess metrics there, and nothing durable
    belongs in it."""
    found = []
    for container in ramparts_containers(documents):
        home = k8s_environment(container, documents).get("RAMPARTS_HOME", "")
        mounts = {m["mountPath"]: m for m in container.spec.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in container.pod.get("volumes", [])}
        mount = mounts.get(home)
        if mount is None or mount.get("readOnly") or "emptyDir" not in volumes[mount["name"]]:
            found.append(f"{container.where}: RAMPARTS_HOME {home!r} is not a writable emptyDir")
    return found


def home_breaches_compose(document: dict[str, Any]) -> list[str]:
    return [
        f"{service}: RAMPARTS_HOME {home!r} is not a tmpfs"
        for service, spec in ramparts_services(document).items()
        if (home := compose_environment(spec).get("RAMPARTS_HOME", "")) not in spec.get("tmpfs", [])
    ]


def metrics_token_breaches(documents: list[dict[str, Any]], document: dict[str, Any]) -> list[str]:
    """Every serving container takes RAMPARTS_METRICS_TOKEN by reference: in Kubernetes from a
    key of ramparts-secrets that an ExternalSecret maps from Vault, in Compose as a required
    `${VARIABLE:?...}` (a missing token stops `up`, it does not serve /metrics to no one)."""
    mapped = {
        entry["secretKey"]
        for d in documents
        if d["kind"] == "ExternalSecret" and d["spec"]["target"]["name"] == "ramparts-secrets"
        for entry in d["spec"].get("data", [])
    }
    found = []
    for container in ramparts_containers(documents):
        if command_of(container) != "serve":
            continue
        variables = {v["name"]: v for v in container.spec.get("env", [])}
        reference = (
            variables.get("RAMPARTS_METRICS_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        )
        if reference is None or reference.get("name") != "ramparts-secrets":
            found.append(f"{container.where}: no RAMPARTS_METRICS_TOKEN from ramparts-secrets")
        elif reference["key"] not in mapped:
            found.append(f"{container.where}: {reference['key']} is mapped from no Vault path")
    for service, spec in ramparts_services(document).items():
        if "serve" in spec.get("command", []):
            value = str(spec.get("environment", {}).get("RAMPARTS_METRICS_TOKEN", ""))
            if not re.fullmatch(r"\$\{RAMPARTS_METRICS_TOKEN:\?[^}]+\}", value):
                found.append(f"{service}: RAMPARTS_METRICS_TOKEN is not a required ${{VARIABLE}}")
    return found


def app_readable_secrets(
    documents: list[dict[str, Any]], policy_text: str | None = None
) -> list[str]:
    """Every Vault path the ExternalSecrets read is under secret/ramparts-platform/, which the
    application's own policy (deploy/vault/ramparts.hcl) cannot read: a compromised API reads
    neither the owner's URL nor the scraper's token. fnmatch's `*` crosses `/`, wider than
    Vault's globs, so this errs towards a breach."""
    text = APP_VAULT_POLICY.read_text() if policy_text is None else policy_text
    policy = [p.replace("+", "*") for p in VAULT_PATH.findall(text)]
    found = []
    for document in documents:
        if document["kind"] != "ExternalSecret":
            continue
        spec = document["spec"]
        keys = [e["extract"]["key"] for e in spec.get("dataFrom", []) if "extract" in e]
        keys += [e["remoteRef"]["key"] for e in spec.get("data", [])]
        for key in keys:
            path = f"secret/data/{key}"
            if not key.startswith("ramparts-platform/"):
                found.append(f"{document['metadata']['name']}: {key} is not a platform path")
            elif any(fnmatch.fnmatchcase(path, pattern) for pattern in policy):
                found.append(f"{document['metadata']['name']}: the app's policy reads {key}")
    return found


def prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS.read_text())
    return config


def scrape_config_breaches(config: dict[str, Any]) -> list[str]:
    """The `ramparts` job (the name alerts.yml reads) scrapes /metrics over verified TLS, as
    the API's certificate names it (the public host), with a bearer token read from a file
    (never written in the configuration), and the configuration loads alerts.yml."""
    jobs = {job["job_name"]: job for job in config.get("scrape_configs", [])}
    job = jobs.get("ramparts")
    if job is None:
        return ["no scrape job named ramparts"]
    found = []
    if job.get("scheme") != "https":
        found.append("ramparts: not scraped over https")
    if job.get("metrics_path", "/metrics") != "/metrics":
        found.append(f"ramparts: scrapes {job['metrics_path']}")
    authorization = job.get("authorization", {})
    if authorization.get("type", "Bearer") != "Bearer" or not authorization.get("credentials_file"):
        found.append("ramparts: no bearer token read from a file")
    if "credentials" in authorization or {"bearer_token", "basic_auth"} & set(job):
        found.append("ramparts: a credential written in the configuration")
    tls = job.get("tls_config", {})
    public_host = urlsplit(dotenv_values(DEPLOY / "prod.env")["RAMPARTS_PUBLIC_URL"] or "").hostname
    if tls.get("insecure_skip_verify"):
        found.append("ramparts: the API's certificate is not verified")
    if tls.get("server_name") != public_host:
        found.append(f"ramparts: verifies {tls.get('server_name')!r}, not {public_host!r}")
    if "alerts.yml" not in config.get("rule_files", []):
        found.append("alerts.yml is not loaded")
    return found


def scraper_reach_breaches(documents: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """Prometheus finds every API pod (a headless Service of the API's pods, the unready ones
    included: a pod that cannot read the database still answers, and that is an alert) on the
    port the API listens on, and the API's network policies admit that port from any source
    (the load balancer, the scraper) and no other port."""
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "ramparts"]
    [discovery] = job["dns_sd_configs"]
    [name] = discovery["names"]
    service_name, namespace = name.split(".")[:2]
    port = discovery["port"]
    [api] = [
        d
        for d in documents
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "ramparts-api"
    ]
    labels = pod_template(api)["metadata"]["labels"]
    [container] = pod_spec(api)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    found = []
    if namespace != yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]:
        found.append(f"{name}: not in the namespace the manifests are applied to")
    services = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "Service"}
    service = services.get(service_name, {})
    if service.get("clusterIP") != "None":
        found.append(f"{service_name}: not a headless Service (one pod per scrape)")
    if service.get("publishNotReadyAddresses") is not True:
        found.append(f"{service_name}: pods not ready are not scraped")
    if not service.get("selector") or not service["selector"].items() <= labels.items():
        found.append(f"{service_name}: does not select the API's pods")
    if port not in ports.values():
        found.append(f"scrapes port {port}; the API listens on {sorted(ports.values())}")
    guarding = [
        d
        for d in documents
        if d["kind"] == "NetworkPolicy"
        and "Ingress" in d["spec"].get("policyTypes", [])
        and set(d["spec"]["podSelector"]) <= {"matchLabels"}
        and d["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
    ]
    if not guarding:
        return [*found, "ramparts-api: no Ingress NetworkPolicy (every port open)"]
    from_anyone: set[int | None] = set()
    admitted: set[int | None] = set()
    for policy in guarding:
        for rule in policy["spec"].get("ingress", []):
            opened = {ports.get(p.get("port"), p.get("port")) for p in rule.get("ports") or [{}]}
            admitted |= opened
            if not rule.get("from"):
                from_anyone |= opened
    if port not in from_anyone:
        found.append(f"ramparts-api: the scraper is not admitted on port {port}")
    if admitted - {port}:
        found.append(f"ramparts-api: admits other ports than {port}: {admitted - {port}}")
    return found


BACKUPS = "/var/backups/ramparts"


def backup_storage_breaches(documents: list[dict[str, Any]], document: dict[str, Any]) -> list[str]:
    """The backup writes its output where a backup outlives the pod (a PersistentVolumeClaim;
    in Compose the operator's directory), and the drill reads that same place, read-only."""
    found = []
    claims: dict[str, tuple[str, bool]] = {}
    for container in ramparts_containers(documents):
        job = container.where.split("/")[0]
        if job not in {"ramparts-backup", "ramparts-drill"}:
            continue
        if job == "ramparts-backup" and f"--output={BACKUPS}" not in container.spec["args"]:
            found.append(f"{container.where}: does not write to {BACKUPS}")
        mount = next(
            (m for m in container.spec.get("volumeMounts", []) if m["mountPath"] == BACKUPS), None
        )
        volumes = {v["name"]: v for v in container.pod.get("volumes", [])}
        claim = volumes[mount["name"]].get("persistentVolumeClaim") if mount else None
        if mount is None or claim is None:
            found.append(f"{container.where}: {BACKUPS} is not a PersistentVolumeClaim")
        else:
            claims[job] = (claim["claimName"], bool(mount.get("readOnly")))
    backup, drill = claims.get("ramparts-backup"), claims.get("ramparts-drill")
    if backup and drill and (backup[0] != drill[0] or backup[1] or not drill[1]):
        found.append(f"the backup writes {backup}, the drill reads {drill}")
    services = document["services"]
    if f"--output={BACKUPS}" not in services.get("backup", {}).get("command", []):
        found.append(f"backup: does not write to {BACKUPS}")
    for service, read_only in (("backup", False), ("drill", True)):
        binds = [str(v) for v in services.get(service, {}).get("volumes", [])]
        mounted = [v for v in binds if v.startswith("${") and f":{BACKUPS}" in v]
        if len(mounted) != 1 or mounted[0].endswith(":ro") != read_only:
            found.append(f"{service}: {BACKUPS} is not the operator's directory {binds}")
    return found


def drill_rpo_breaches(documents: list[dict[str, Any]]) -> list[str]:
    """The drill's RPO is the age of the snapshot it restores: its target must cover the time
    between backups, or every drill fails on a healthy schedule."""
    cronjobs = {d["metadata"]["name"]: d for d in documents if d["kind"] == "CronJob"}
    hours = cronjobs["ramparts-backup"]["spec"]["schedule"].split()[1]
    every = 3600 * (int(hours.removeprefix("*/")) if hours.startswith("*/") else 24)
    [drill] = pod_spec(cronjobs["ramparts-drill"])["containers"]
    target = re.search(r'"--rpo-target=([^"]+)"', drill["args"][1])
    if target is None:
        return ["ramparts-drill: no --rpo-target (the default, 15m, is shorter than any schedule)"]
    if parse_duration(target.group(1)) < every:
        return [
            f"ramparts-drill: --rpo-target={target.group(1)} under the {every} s between backups"
        ]
    return []


def command_lines(
    documents: list[dict[str, Any]], document: dict[str, Any]
) -> Iterator[tuple[str, list[str]]]:
    """Every `ramparts` command line the manifests run, the drill's from inside its script."""
    for container in ramparts_containers(documents):
        words = [*container.spec.get("command", []), *container.spec.get("args", [])]
        yield container.where, words
    for service, spec in ramparts_services(document).items():
        yield service, [*spec.get("entrypoint", []), *spec.get("command", [])]


def unparsed_commands(lines: Iterator[tuple[str, list[str]]]) -> list[str]:
    """The command lines the CLI would refuse (an unknown command or option, a bad value)."""
    group = typer.main.get_command(ramparts_cli)
    assert isinstance(group, typer.core.TyperGroup)
    found = []
    for where, line in lines:
        words = line
        if line[:2] == ["python", "-c"]:
            execvp = re.search(r'os\.execvp\("ramparts", (\[.*\])\)', line[2], re.DOTALL)
            if execvp is None:
                found.append(f"{where}: runs no ramparts command")
                continue
            words = ast.literal_eval(execvp.group(1).replace("str(found[-1])", '"latest"'))
        if words[0] != "ramparts":
            found.append(f"{where}: runs {words[0]}, not ramparts")
            continue
        command = group.get_command(typer.Context(group), words[1])
        if command is None:
            found.append(f"{where}: no command {words[1]!r}")
            continue
        try:
            command.make_context(words[1], words[2:])
        except typer.TyperException as exc:  # typer's click: its usage errors
            found.append(f"{where}: {exc}")
    return found


# --- the manifests obey them ------------------------------------------------------------------


def test_the_scheduled_jobs_run_what_prod_needs() -> None:
    """Reconcile daily (not `worker --reconcile`, which the prod guard refuses with the owner's
    URL), back up every few hours, drill the newest backup daily; one run at a time, each
    with a deadline (a hung run fails, and alerts), failed runs kept for the alert."""
    cronjobs = {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == "CronJob"}
    assert set(cronjobs) == {"ramparts-reconcile", "ramparts-backup", "ramparts-drill"}
    for cronjob in cronjobs.values():
        spec = cronjob["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["failedJobsHistoryLimit"] >= 1
        assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
        assert "ttlSecondsAfterFinished" not in spec["jobTemplate"]["spec"]
    args = {
        c.where: c.spec["args"]
        for c in k8s_containers(k8s_documents())
        if c.pod.get("restartPolicy")
    }
    assert args["ramparts-reconcile/reconcile"][0] == "reconcile"
    assert args["ramparts-backup/backup"][0] == "backup"
    assert 'os.execvp("ramparts", ["ramparts", "drill"' in args["ramparts-drill/drill"][1]
    assert compose()["services"]["drill"]["command"] == args["ramparts-drill/drill"]
    assert backup_storage_breaches(k8s_documents(), compose()) == []
    assert drill_rpo_breaches(k8s_documents()) == []


def test_every_ramparts_container_starts_under_the_prod_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the prod settings and what the secret store holds, `serve` and `worker` pass the
    production guard, and every other command's settings load (a Vault login each, no
    unknown name): a deploy that `kubectl apply` accepts but whose processes exit 3."""
    documents = k8s_documents()
    refused = {
        container.where: prod_refusals(
            k8s_environment(container, documents),
            monkeypatch,
            guarded=command_of(container) in GUARDED,
        )
        for container in ramparts_containers(documents)
    }
    for service, spec in ramparts_services(compose()).items():
        guarded = bool(GUARDED & set(spec.get("command", [])))
        refused[service] = prod_refusals(compose_environment(spec), monkeypatch, guarded=guarded)
    assert len(refused) == 12
    assert {where: reasons for where, reasons in refused.items() if reasons} == {}


def test_every_command_line_the_manifests_run_parses() -> None:
    lines = list(command_lines(k8s_documents(), compose()))
    assert len(lines) == 12
    assert unparsed_commands(iter(lines)) == []
    planted = [
        ("backup", ["ramparts", "backup", "--ouput=/var/backups/ramparts"]),
        ("drill", ["python", "-c", 'os.execvp("ramparts", ["ramparts", "dril"])']),
        ("worker", ["ramparts", "worker", "--concurrency=0"]),
    ]
    assert [line.split(":")[0] for line in unparsed_commands(iter(planted))] == [
        "backup",
        "drill",
        "worker",
    ]


def test_metrics_are_scraped_with_a_token_from_the_platform_store() -> None:
    assert metrics_token_breaches(k8s_documents(), compose()) == []
    assert app_readable_secrets(k8s_documents()) == []
    assert scrape_config_breaches(prometheus_config()) == []


def test_the_scraper_reaches_every_api_pod_and_nothing_else() -> None:
    assert scraper_reach_breaches(k8s_documents(), prometheus_config()) == []


def test_ramparts_home_is_scratch_space_in_every_container() -> None:
    assert home_breaches_k8s(k8s_documents()) == []
    assert home_breaches_compose(compose()) == []


# --- and each rule fails on its breach --------------------------------------------------------


def container_of(documents: list[dict[str, Any]], where: str) -> Container:
    return next(c for c in k8s_containers(documents) if c.where == where)


def test_each_operations_rule_fails_on_a_planted_breach(monkeypatch: pytest.MonkeyPatch) -> None:
    def tokenless(documents: list[dict[str, Any]]) -> None:
        api = api_container(documents)
        api["env"] = [v for v in api["env"] if v["name"] != "RAMPARTS_METRICS_TOKEN"]

    assert metrics_token_breaches(planted(tokenless), compose()) == [
        "ramparts-api/api: no RAMPARTS_METRICS_TOKEN from ramparts-secrets"
    ]

    def app_path(documents: list[dict[str, Any]]) -> None:
        [secret] = [d for d in documents if d["metadata"]["name"] == "ramparts-secrets"]
        secret["spec"]["data"][0]["remoteRef"]["key"] = "ramparts/metrics"

    assert app_readable_secrets(planted(app_path)) == [
        "ramparts-secrets: ramparts/metrics is not a platform path"
    ]
    widened = APP_VAULT_POLICY.read_text().replace(
        '"secret/data/ramparts/*"', '"secret/data/ramparts*"'
    )
    assert app_readable_secrets(k8s_documents(), widened) == [
        "ramparts-secrets: the app's policy reads ramparts-platform/runtime",
        "ramparts-secrets: the app's policy reads ramparts-platform/metrics",
        "ramparts-pgbouncer-userlist: the app's policy reads ramparts-platform/pgbouncer",
    ]
    document = compose()
    document["services"]["api"]["environment"]["RAMPARTS_METRICS_TOKEN"] = (
        "${RAMPARTS_METRICS_TOKEN:-}"
    )
    assert metrics_token_breaches(k8s_documents(), document) == [
        "api: RAMPARTS_METRICS_TOKEN is not a required ${VARIABLE}"
    ]

    config = prometheus_config()
    [job] = config["scrape_configs"][:1]
    job["scheme"] = "http"
    job["authorization"] = {"credentials": "x" * 32}
    job["tls_config"] = {"insecure_skip_verify": True}
    config["rule_files"] = []
    assert scrape_config_breaches(config) == [
        "ramparts: not scraped over https",
        "ramparts: no bearer token read from a file",
        "ramparts: a credential written in the configuration",
        "ramparts: the API's certificate is not verified",
        "ramparts: verifies None, not 'ramparts.example.com'",
        "alerts.yml is not loaded",
    ]

    def through_the_service(documents: list[dict[str, Any]]) -> None:
        [service] = [d for d in documents if d["metadata"]["name"] == "ramparts-api-metrics"]
        service["spec"].pop("clusterIP")
        service["spec"].pop("publishNotReadyAddresses")
        [policy] = [
            d
            for d in documents
            if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "ramparts-api"
        ]
        policy["spec"]["ingress"] = [
            {"from": [{"podSelector": {}}], "ports": [{"port": "https"}]},
            {"ports": [{"port": 9090}]},
        ]

    assert scraper_reach_breaches(planted(through_the_service), prometheus_config()) == [
        "ramparts-api-metrics: not a headless Service (one pod per scrape)",
        "ramparts-api-metrics: pods not ready are not scraped",
        "ramparts-api: the scraper is not admitted on port 8443",
        "ramparts-api: admits other ports than 8443: {9090}",
    ]

    def unguarded_api(documents: list[dict[str, Any]]) -> None:
        documents[:] = [
            d
            for d in documents
            if d["kind"] != "NetworkPolicy" or d["metadata"]["name"] != "ramparts-api"
        ]

    assert scraper_reach_breaches(planted(unguarded_api), prometheus_config()) == [
        "ramparts-api: no Ingress NetworkPolicy (every port open)"
    ]

    def durable_home(documents: list[dict[str, Any]]) -> None:
        api = container_of(documents, "ramparts-api/api")
        [home] = [v for v in api.pod["volumes"] if v["name"] == "home"]
        home.pop("emptyDir")
        home["persistentVolumeClaim"] = {"claimName": "ramparts-home"}

    assert home_breaches_k8s(planted(durable_home)) == [
        "ramparts-api/api: RAMPARTS_HOME '/var/lib/ramparts' is not a writable emptyDir"
    ]
    document = compose()
    api = document["services"]["api"]
    api["tmpfs"] = [path for path in api["tmpfs"] if path != "/var/lib/ramparts"]
    assert home_breaches_compose(document) == [
        "api: RAMPARTS_HOME '/var/lib/ramparts' is not a tmpfs"
    ]

    def ephemeral_backups(documents: list[dict[str, Any]]) -> None:
        backup = container_of(documents, "ramparts-backup/backup")
        [volume] = [v for v in backup.pod["volumes"] if v["name"] == "backups"]
        volume.pop("persistentVolumeClaim")
        volume["emptyDir"] = {}
        drill = container_of(documents, "ramparts-drill/drill")
        drill.spec["volumeMounts"][-1].pop("readOnly")

    document = compose()
    document["services"]["drill"]["volumes"] = ["backups:/var/backups/ramparts"]
    assert backup_storage_breaches(planted(ephemeral_backups), document) == [
        "ramparts-backup/backup: /var/backups/ramparts is not a PersistentVolumeClaim",
        "drill: /var/backups/ramparts is not the operator's directory "
        "['backups:/var/backups/ramparts']",
    ]

    documents = k8s_documents()
    backup = container_of(documents, "ramparts-backup/backup")
    backup.spec["env"] = [v for v in backup.spec["env"] if v["name"] != "RAMPARTS_VAULT_SECRET_ID"]
    [refusal] = prod_refusals(k8s_environment(backup, documents), monkeypatch, guarded=False)
    assert "RAMPARTS_VAULT_SECRET_ID" in refusal
    worker = container_of(documents, "ramparts-worker/worker")
    worker.spec["env"].append(
        {
            "name": "RAMPARTS_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"key": "owner-database-url"}},
        }
    )
    worker.spec["env"] = [v for v in worker.spec["env"] if v["name"] != "RAMPARTS_REDIS_URL"]
    refusals = prod_refusals(k8s_environment(worker, documents), monkeypatch, guarded=True)
    assert [r.split(" ")[0] for r in refusals] == ["RAMPARTS_DATABASE_URL", "RAMPARTS_REDIS_URL"]

    def hourly_rpo(documents: list[dict[str, Any]]) -> None:
        drill = container_of(documents, "ramparts-drill/drill")
        drill.spec["args"][1] = drill.spec["args"][1].replace("--rpo-target=6h", "--rpo-target=1h")

    assert drill_rpo_breaches(planted(hourly_rpo)) == [
        "ramparts-drill: --rpo-target=1h under the 21600 s between backups"
    ]
