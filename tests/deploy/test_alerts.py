"""`deploy/alerts.yml`: valid Prometheus rules (promtool, and our schema), unit-tested, one
for every alert the runtime raises, over metrics the running app really exports."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ramparts.alerts import AlertKind

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "alerts.yml"
RULE_TESTS = DEPLOY / "alerts.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")

#: What every rule must carry besides what Prometheus requires: a severity, words for the
#: person paged, and the runbook's section of the operations guide.
RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["groups"],
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "rules"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": "^ramparts-[a-z-]+$"},
                    "rules": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/rule"}},
                },
            },
        }
    },
    "$defs": {
        "rule": {
            "type": "object",
            "required": ["alert", "expr", "labels", "annotations"],
            "additionalProperties": False,
            "properties": {
                "alert": {"type": "string", "pattern": "^Ramparts[A-Za-z0-9]+$"},
                "expr": {"type": "string", "minLength": 1},
                "for": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                "labels": {
                    "type": "object",
                    "required": ["severity"],
                    "properties": {
                        "severity": {"enum": ["critical", "warning", "info"]},
                        "alert_kind": {"type": "string"},
                    },
                },
                "annotations": {
                    "type": "object",
                    "required": ["summary", "description", "runbook_url"],
                    "additionalProperties": False,
                    "properties": {
                        "summary": {"type": "string", "minLength": 10},
                        "description": {"type": "string", "minLength": 20},
                        "runbook_url": {
                            "type": "string",
                            "pattern": "^docs/operations\\.md#runbook-[a-z0-9-]+$",
                        },
                    },
                },
            },
        }
    },
}
_METRIC = re.compile(r"\bramparts_[a-z0-9_]+")


def _load(path: Path = RULES) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _rules(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in document["groups"]:
        yield from group["rules"]


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(RULE_SCHEMA)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]
    names = [rule.get("alert") for rule in _rules(document)] if not errors else []
    errors += [f"{name}: defined twice" for name in {n for n in names if names.count(n) > 1}]
    return errors


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rules_meet_the_schema() -> None:
    assert schema_errors(_load()) == []


def test_the_schema_refuses_a_rule_without_severity_or_runbook() -> None:
    planted = copy.deepcopy(_load())
    first = planted["groups"][0]["rules"][0]
    del first["labels"]["severity"]
    first["annotations"]["runbook_url"] = "https://wiki.example/somewhere"
    planted["groups"][1]["rules"].append(copy.deepcopy(planted["groups"][1]["rules"][0]))
    errors = schema_errors(planted)
    assert any("'severity' is a required property" in e for e in errors), errors
    assert any("runbook_url" in e for e in errors), errors
    planted = copy.deepcopy(_load())
    planted["groups"][1]["rules"].append(copy.deepcopy(planted["groups"][1]["rules"][0]))
    assert schema_errors(planted) == ["RampartsDeadLetters: defined twice"]


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    checked = _promtool("check", "rules", str(RULES), cwd=DEPLOY)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(list(_rules(_load())))} rules found" in checked.stdout


@needs_promtool
def test_promtool_refuses_a_broken_expression(tmp_path: Path) -> None:
    planted = _load()
    planted["groups"][0]["rules"][1]["expr"] = "max by (instance) (ramparts_operations_gauges_up =="
    broken = tmp_path / "alerts.yml"
    broken.write_text(yaml.safe_dump(planted))
    checked = _promtool("check", "rules", str(broken), cwd=tmp_path)
    assert checked.returncode == 1
    assert "RampartsOperationsGaugesDown" in checked.stdout + checked.stderr


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    tested = _promtool("test", "rules", RULE_TESTS.name, cwd=DEPLOY)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_the_rules_unit_tests_fail_on_a_rule_that_no_longer_fires(tmp_path: Path) -> None:
    planted = _load()
    dead_letters = next(r for r in _rules(planted) if r["alert"] == "RampartsDeadLetters")
    dead_letters["expr"] = "max(ramparts_dlq_depth) > 5"  # would miss two dead letters
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(planted))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    tested = _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode == 1
    assert "alertname: RampartsDeadLetters" in tested.stdout + tested.stderr


def test_every_alert_the_runtime_raises_has_a_rule() -> None:
    kinds = {r["labels"].get("alert_kind") for r in _rules(_load())}
    assert {kind.value for kind in AlertKind} <= kinds
    assert "ai_abuse" in kinds  # raised by the request rules' abuse detection (PLT-3)


def exported_names(exposition: str) -> set[str]:
    """Every series name an exposition declares, samples or not (a counter never
    incremented has its HELP and TYPE lines only)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    return {
        family.name + suffix
        for family in text_string_to_metric_families(exposition)
        for suffix in suffixes.get(family.type, ("",))
    }


def unexported(document: dict[str, Any], exported: set[str]) -> set[str]:
    """The ramparts metrics the rules read that the app does not export."""
    named = {name for rule in _rules(document) for name in _METRIC.findall(rule["expr"])}
    return named - exported


def test_every_metric_the_rules_read_is_exported(
    serve_app: Callable[..., httpx.Client],
) -> None:
    client = serve_app()
    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    exported = exported_names(scraped.text)
    assert {"ramparts_http_requests_total", "ramparts_dlq_depth"} <= exported
    assert unexported(_load(), exported) == set()
    planted = _load()
    planted["groups"][0]["rules"][0]["expr"] = "sum(rate(ramparts_http_requests_totl[5m])) > 1"
    assert unexported(planted, exported) == {"ramparts_http_requests_totl"}


def missing_runbooks(document: dict[str, Any], guide: str) -> set[str]:
    """The runbook anchors the rules point to that the operations guide does not hold."""
    anchors = set(re.findall(r'<a id="(runbook-[a-z0-9-]+)"></a>', guide))
    pointed = {rule["annotations"]["runbook_url"].partition("#")[2] for rule in _rules(document)}
    return pointed - anchors


def test_every_runbook_the_rules_point_to_is_in_the_operations_guide() -> None:
    guide = (DEPLOY.parent / "docs" / "operations.md").read_text()
    assert missing_runbooks(_load(), guide) == set()
    # A rule pointing to a section the guide lacks is caught.
    assert missing_runbooks(_load(), guide.replace('<a id="runbook-ai-abuse"></a>', "")) == {
        "runbook-ai-abuse"
    }


# --- the scrape configuration and the scheduled jobs' alerts ----------------------------------

SCRAPE_CONFIG = DEPLOY / "prometheus.yml"
K8S = DEPLOY / "k8s"
_JOB_SELECTOR = re.compile(r"kube_job_failed\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|=|!=|!~)\s*"([^"]*)"')


def _scrape_config_in(directory: Path, config: dict[str, Any]) -> Path:
    """`config` written to `directory` beside alerts.yml, its token file pointed at a real
    one there (promtool checks that the file exists; the real one is mounted at run time)."""
    token = directory / "token"
    token.write_text("a-token-the-check-reads-nowhere\n")
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)
    shutil.copy(RULES, directory / RULES.name)
    path = directory / SCRAPE_CONFIG.name
    path.write_text(yaml.safe_dump(config))
    return path


@needs_promtool
def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    path = _scrape_config_in(tmp_path, config)
    checked = _promtool("check", "config", path.name, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(list(_rules(_load())))} rules found" in checked.stdout
    assert config["scrape_configs"][0]["job_name"] == "ramparts"


@needs_promtool
def test_promtool_refuses_a_broken_scrape_config(tmp_path: Path) -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["scrape_configs"].append(copy.deepcopy(config["scrape_configs"][0]))
    path = _scrape_config_in(tmp_path, config)
    checked = _promtool("check", "config", path.name, cwd=tmp_path)
    assert checked.returncode == 1
    assert (
        'found multiple scrape configs with job name "ramparts"' in checked.stdout + checked.stderr
    )


def cronjobs() -> list[str]:
    return [
        document["metadata"]["name"]
        for path in sorted(K8S.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document and document["kind"] == "CronJob"
    ]


def unwatched_cronjobs(document: dict[str, Any], names: list[str]) -> list[str]:
    """Each CronJob's Jobs (named `<cronjob>-<minutes since the epoch>`) in our namespace are
    matched by exactly one rule on their Failed condition, whose runbook is
    `runbook-<what>-failed`; a Job of any other workload by none."""
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    watching: dict[str, list[str]] = {}
    for rule in _rules(document):
        for selector in _JOB_SELECTOR.findall(rule["expr"]):
            matchers = {label: (op, value) for label, op, value in _MATCHER.findall(selector)}
            if matchers.get("namespace") != ("=", namespace):
                continue
            if matchers.get("condition") != ("=", "true"):
                continue
            op, pattern = matchers.get("job_name", ("=~", ".*"))
            for name in [*names, "ramparts-migrate-0-1-0"]:
                job = f"{name}-29400000" if name in names else name
                if (re.fullmatch(pattern, job) is not None) == (op == "=~"):
                    watching.setdefault(name, []).append(rule["annotations"]["runbook_url"])
    found = [f"{name}: no alert when its Job fails" for name in names if name not in watching]
    found += [
        f"{name}: watched by {len(runbooks)} rules"
        for name, runbooks in watching.items()
        if name in names and len(runbooks) > 1
    ]
    found += [
        f"{name}: runbook {runbooks[0]}"
        for name, runbooks in watching.items()
        if name in names
        and len(runbooks) == 1
        and not runbooks[0].endswith(f"#runbook-{name.removeprefix('ramparts-')}-failed")
    ]
    found += [f"{name}: is not a scheduled job" for name in watching if name not in names]
    return found


def test_every_scheduled_job_alerts_when_it_fails() -> None:
    names = cronjobs()
    assert names == ["ramparts-reconcile", "ramparts-backup", "ramparts-drill"]
    assert unwatched_cronjobs(_load(), names) == []


def test_a_scheduled_job_without_its_alert_is_noticed() -> None:
    planted = _load()
    backup = next(r for r in _rules(planted) if r["alert"] == "RampartsBackupFailed")
    backup["expr"] = backup["expr"].replace("ramparts-backup-.*", "ramparts-backups-.*")
    assert unwatched_cronjobs(planted, [*cronjobs(), "ramparts-vacuum"]) == [
        "ramparts-backup: no alert when its Job fails",
        "ramparts-vacuum: no alert when its Job fails",
    ]
    planted = _load()
    drill = next(r for r in _rules(planted) if r["alert"] == "RampartsDrillFailed")
    drill["expr"] = drill["expr"].replace('job_name=~"ramparts-drill-.*"', 'job_name=~".*"')
    assert unwatched_cronjobs(planted, cronjobs()) == [
        "ramparts-backup: watched by 2 rules",
        "ramparts-reconcile: watched by 2 rules",
        "ramparts-migrate-0-1-0: is not a scheduled job",
    ]
    planted = _load()
    reconcile = next(r for r in _rules(planted) if r["alert"] == "RampartsReconcileFailed")
    reconcile["annotations"]["runbook_url"] = "docs/operations.md#runbook-reconciliation-drift"
    assert unwatched_cronjobs(planted, cronjobs()) == [
        "ramparts-reconcile: runbook docs/operations.md#runbook-reconciliation-drift"
    ]


@needs_promtool
def test_the_rules_unit_tests_fail_on_a_job_alert_that_no_longer_fires(tmp_path: Path) -> None:
    planted = _load()
    backup = next(r for r in _rules(planted) if r["alert"] == "RampartsBackupFailed")
    backup["expr"] = backup["expr"].replace('condition="true"', 'condition="false"')
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(planted))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    tested = _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode == 1
    assert "alertname: RampartsBackupFailed" in tested.stdout + tested.stderr
