"""The problem-type catalogue: what it answers, and README.md's list of it kept in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ramparts.problems import PROBLEM_JSON, Problem, ProblemType, problem_response

README = Path(__file__).resolve().parent.parent / "README.md"


def _documented_slugs() -> list[str]:
    """The slugs README.md's "Errors over HTTP" lists after `urn:ramparts:problem:` +."""
    section = README.read_text().split("## Errors over HTTP\n", 1)[1].split("\n## ", 1)[0]
    listing = section.split("`urn:ramparts:problem:` +", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"`([a-z]+(?:-[a-z]+)*)`", listing)


def test_every_problem_type_is_in_the_readme() -> None:
    missing = [t.slug for t in ProblemType if t.slug not in _documented_slugs()]
    assert not missing, f"README.md's 'Errors over HTTP' does not list {missing}"


def test_the_readme_lists_only_problem_types() -> None:
    slugs = {t.slug for t in ProblemType}
    unknown = [slug for slug in _documented_slugs() if slug not in slugs]
    assert not unknown, f"README.md's 'Errors over HTTP' lists types the code lacks: {unknown}"


def test_each_slug_names_one_type() -> None:
    slugs = [t.slug for t in ProblemType]
    assert len(slugs) == len(set(slugs))


def test_a_problem_answers_with_its_type_title_and_extensions() -> None:
    problem = Problem(
        429, ProblemType.RATE_LIMITED, "slow down", headers={"Retry-After": "3"}, limit=10
    )
    response = problem.response()
    assert (response.status_code, response.media_type) == (429, PROBLEM_JSON)
    assert response.headers["retry-after"] == "3"
    assert json.loads(response.body) == {
        "type": "urn:ramparts:problem:rate-limited",
        "title": "Too many requests",
        "status": 429,
        "detail": "slow down",
        "limit": 10,
    }
    assert str(problem) == "slow down"


def test_without_detail_the_body_has_none() -> None:
    response = problem_response(500, ProblemType.INTERNAL_ERROR)
    assert json.loads(response.body) == {
        "type": "urn:ramparts:problem:internal-error",
        "title": "Internal server error",
        "status": 500,
    }


def test_a_framework_error_is_titled_with_its_status_phrase() -> None:
    response = problem_response(413, ProblemType.HTTP_ERROR, "the body is too large")
    assert json.loads(response.body)["title"] == "Request Entity Too Large"
