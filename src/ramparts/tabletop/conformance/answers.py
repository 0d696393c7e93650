"""How the checks read and cite an instance's answers: the problem type of a refusal, one
evidence line per request (`POST /path → 400 card-number-refused`)."""

from __future__ import annotations

import httpx

from ramparts.problems import PROBLEM_JSON, TYPE_PREFIX

__all__ = ["problem_type", "said"]


def problem_type(answer: httpx.Response) -> str | None:
    """The slug of a problem+json answer's `type` (`card-number-refused`), else None."""
    if not answer.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return None
    try:
        kind = answer.json().get("type")
    except ValueError:
        return None
    if not isinstance(kind, str):
        return None
    return kind.removeprefix(TYPE_PREFIX)


def said(answer: httpx.Response, what: str | None = None) -> str:
    """One evidence line for `answer`: its request, its status and its problem type."""
    request = what or f"{answer.request.method} {answer.request.url.path}"
    kind = problem_type(answer)
    return f"{request} → {answer.status_code}" + (f" {kind}" if kind else "")
