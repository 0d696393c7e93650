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
