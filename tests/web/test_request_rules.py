"""Request rules (PLT-3) on every route: the test walks the router of the app serving the
runtime, the quote app and the expenses example, over real HTTP, and plants each problem on
each route: an undeclared method, an oversized URL, too many or too large headers, a control
character in a path or query identifier, and, on every JSON-body route, a body past each JSON
rule. Each is refused with its own problem, carries the security headers, and adds one to
`ramparts_request_refusals_total{rule}`; what was sent never comes back in the answer."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.params import Form
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Scope

from ramparts.payments.webhooks import WEBHOOK_PATH
from ramparts.problems import Problem
from ramparts.web.bodies import MAX_FORM_FIELDS, check_json
from ramparts.web.errors import allowed_methods
from ramparts.web.rules import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_JSON_ARRAY_ITEMS,
    MAX_JSON_DEPTH,
    MAX_JSON_KEYS,
    MAX_JSON_STRING_CHARS,
    MAX_URL_BYTES,
    Rule,
    check_head,
)
from tests.web.test_edge import FORM, assert_problem, assert_security_headers

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PARAMETER = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")
AN_ID = "0b6c3a52-5f1e-4f7e-9a57-3d1d2f0c8e11"
#: What every planted value holds, so an answer that echoed it would show.
MARK = "zq9mark"


@pytest.fixture(scope="module")
def served(serve_module_app: Callable[..., httpx.Client]) -> tuple[httpx.Client, FastAPI]:
    apps: list[FastAPI] = []
    client = serve_module_app(apps.append, apps=("quotes", "expenses"))
    return client, apps[0]


def refusals(rule: Rule) -> float:
    return REGISTRY.get_sample_value("ramparts_request_refusals_total", {"rule": rule.value}) or 0.0


def endpoints(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route and mount, through included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from endpoints(included.routes)
        else:
            yield route


def concrete(path: str, value: str = AN_ID) -> str:
    """The route's path with each parameter given `value`."""
    return PARAMETER.sub(value, path)


def walked(app: FastAPI) -> list[tuple[str, str]]:
    """(path template, a URL answered by that route) for every route and the static mount."""
    found = []
    for route in endpoints(app.routes):
        if isinstance(route, Route):
            found.append((route.path, concrete(route.path)))
        elif isinstance(route, Mount):
            found.append((route.path, f"{route.path}/app.css"))
    return found


def json_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, URL) of every route that takes a JSON body."""
    found = []
    for route in endpoints(app.routes):
        if isinstance(route, APIRoute) and route.body_field is not None:
            if isinstance(route.body_field.field_info, Form):
                continue
            found += [(method, concrete(route.path)) for method in sorted(route.methods)]
    return found


def refused(
    response: httpx.Response, status: int, slug: str, rule: Rule, before: float
) -> dict[str, object]:
    body = assert_problem(response, status, slug)
    assert str(body["detail"]).startswith(f"{rule.value}: "), body
    assert MARK not in response.text
    assert refusals(rule) == before + 1, rule
    return body


def test_the_walk_covers_the_runtime_and_both_apps(served: tuple[httpx.Client, FastAPI]) -> None:
    _, app = served
    paths = {template for template, _ in walked(app)}
    assert {"/api/assistant", "/api/quotes/{quote_id}", "/oauth/token", "/static"} <= paths
    assert any(p.startswith("/api/expenses") for p in paths), sorted(paths)
    bodies = json_routes(app)
    assert ("POST", "/api/assistant") in bodies
    assert any(url.startswith("/api/expenses") for _, url in bodies)
    assert len(bodies) >= 12


def test_every_route_answers_with_the_security_headers(
    served: tuple[httpx.Client, FastAPI],
) -> None:
    client, app = served
    for route in endpoints(app.routes):
        methods = sorted(route.methods or ()) if isinstance(route, Route) else ["GET"]
        url = concrete(route.path) if isinstance(route, Route) else f"{route.path}/app.css"
        response = client.request(methods[0], url)
        assert_security_headers(response)


def test_every_route_refuses_an_undeclared_method_with_405_and_allow(
    served: tuple[httpx.Client, FastAPI],
) -> None:
    client, app = served
    for template, url in walked(app):
        allowed = allowed_methods(app.routes, url)
        method = next((m for m in METHODS if m not in allowed), "TRACE")
        before = refusals(Rule.METHOD)
        response = client.request(method, url)
        body = assert_problem(response, 405, "method-not-allowed")
        assert response.headers["allow"] == ", ".join(allowed), template
        assert method in str(body["detail"])
        assert refusals(Rule.METHOD) == before + 1, template


def test_every_route_refuses_an_oversized_url_and_oversized_headers(
    served: tuple[httpx.Client, FastAPI],
) -> None:
    client, app = served
    for template, url in walked(app):
        method = "GET" if "GET" in allowed_methods(app.routes, url) else "POST"
        long_query = {"q": MARK + "x" * (MAX_URL_BYTES - len(url))}
        before = refusals(Rule.URL_LENGTH)
        response = client.request(method, url, params=long_query)
        refused(response, 414, "url-too-long", Rule.URL_LENGTH, before)

        many = [(f"x-pad-{i}", MARK) for i in range(MAX_HEADERS)]
        before = refusals(Rule.HEADER_COUNT)
        response = client.request(method, url, headers=many)
        refused(response, 431, "too-many-headers", Rule.HEADER_COUNT, before)

        large = {"x-pad": MARK + "x" * MAX_HEADER_BYTES}
        before = refusals(Rule.HEADER_SIZE)
        response = client.request(method, url, headers=large)
        refused(response, 431, "headers-too-large", Rule.HEADER_SIZE, before)
        assert template


@pytest.mark.parametrize("character", ["%00", "%0A", "%1B", "%7F", "%C2%85", "%E2%80%AE"])
def test_every_route_refuses_a_control_character_in_a_path_or_query_identifier(
    served: tuple[httpx.Client, FastAPI], character: str
) -> None:
    """NUL, LF, ESC, DEL, the C1 NEL and the right-to-left override (U+202E), sent
    percent-encoded: in a path parameter of every route that has one, and in a query
    parameter of every route."""
    client, app = served
    for template, url in walked(app):
        method = "GET" if "GET" in allowed_methods(app.routes, url) else "POST"
        if PARAMETER.search(template):
            before = refusals(Rule.CONTROL_CHARACTER)
            bad = concrete(template, f"{MARK}{character}1")
            response = client.request(method, bad)
            body = refused(response, 400, "control-character", Rule.CONTROL_CHARACTER, before)
            assert "the path" in str(body["detail"])
        before = refusals(Rule.CONTROL_CHARACTER)
        response = client.request(method, f"{url}?id={MARK}{character}")
        body = refused(response, 400, "control-character", Rule.CONTROL_CHARACTER, before)
        assert "query parameter 'id'" in str(body["detail"])


PAST_EACH_JSON_RULE: list[tuple[str, Any, Rule, str]] = [
    (
        "too deep",
        f'{"[" * (MAX_JSON_DEPTH + 1)}"{MARK}"{"]" * (MAX_JSON_DEPTH + 1)}',
        Rule.JSON_DEPTH,
        "json-too-deep",
    ),
    (
        "too many keys",
        {f"{MARK}{i}": 1 for i in range(MAX_JSON_KEYS + 1)},
        Rule.JSON_KEYS,
        "json-too-many-keys",
    ),
    (
        "string too long",
        {"message": MARK + "x" * MAX_JSON_STRING_CHARS},
        Rule.JSON_STRING_LENGTH,
        "json-string-too-long",
    ),
    (
        "array too long",
        {"ids": [MARK] * (MAX_JSON_ARRAY_ITEMS + 1)},
        Rule.JSON_ARRAY_LENGTH,
        "json-array-too-long",
    ),
]


@pytest.mark.parametrize(
    ("body", "rule", "slug"),
    [p[1:] for p in PAST_EACH_JSON_RULE],
    ids=[p[0] for p in PAST_EACH_JSON_RULE],
)
def test_every_json_route_refuses_a_body_past_each_json_rule(
    served: tuple[httpx.Client, FastAPI], body: Any, rule: Rule, slug: str
) -> None:
    client, app = served
    for method, url in json_routes(app):
        before = refusals(rule)
        if isinstance(body, str):
            response = client.request(
                method, url, content=body, headers={"content-type": "application/json"}
            )
        else:
            response = client.request(method, url, json=body)
        refused(response, 422, slug, rule, before)


def test_a_refused_request_never_reaches_a_route(
    served: tuple[httpx.Client, FastAPI],
) -> None:
    """The edge answers before authentication: a route's own answer (401 without a token)
    never comes instead."""
    client, _ = served
    response = client.post("/api/quotes", json={"items": [MARK] * (MAX_JSON_ARRAY_ITEMS + 1)})
    assert response.status_code == 422
    assert client.post("/api/quotes", json={"items": []}).status_code == 401


# The limits themselves, at their edges: what is at the limit passes, one past it is refused.


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("at_limit", "past_limit", "rule"),
    [
        (nested(MAX_JSON_DEPTH), nested(MAX_JSON_DEPTH + 1), Rule.JSON_DEPTH),
        (
            "{" + ",".join(f'"k{i}":{{}}' for i in range(MAX_JSON_KEYS)) + "}",
            "{" + ",".join(f'"k{i}":1' for i in range(MAX_JSON_KEYS + 1)) + "}",
            Rule.JSON_KEYS,
        ),
        (
            '{"' + "k" * MAX_JSON_STRING_CHARS + '": 1}',
            '{"' + "k" * (MAX_JSON_STRING_CHARS + 1) + '": 1}',
            Rule.JSON_STRING_LENGTH,
        ),
        (
            "[" + ",".join("[]" for _ in range(MAX_JSON_ARRAY_ITEMS)) + "]",
            "[" + ",".join("1" for _ in range(MAX_JSON_ARRAY_ITEMS + 1)) + "]",
            Rule.JSON_ARRAY_LENGTH,
        ),
    ],
    ids=lambda v: v.value if isinstance(v, Rule) else "",
)
def test_each_json_limit_takes_what_is_at_it_and_refuses_one_more(
    at_limit: str, past_limit: str, rule: Rule
) -> None:
    before = refusals(rule)
    check_json(at_limit)
    assert refusals(rule) == before
    with pytest.raises(Problem) as refused_problem:
        check_json(past_limit)
    assert refused_problem.value.status == 422
    assert refusals(rule) == before + 1


def test_nesting_deeper_than_the_parser_goes_is_the_depth_rule_too() -> None:
    before = refusals(Rule.JSON_DEPTH)
    with pytest.raises(Problem) as refused_problem:
        check_json(nested(100_000))
    assert refused_problem.value.type.slug == "json-too-deep"
    assert refusals(Rule.JSON_DEPTH) == before + 1


def head(path: str = "/api/quotes", query: bytes = b"", **headers: bytes) -> Scope:
    return {
        "type": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(k.replace("_", "-").encode(), v) for k, v in headers.items()],
    }


def test_the_head_limits_take_what_is_at_them() -> None:
    check_head(head(query=b"q=" + b"x" * (MAX_URL_BYTES - len("/api/quotes") - 2)))
    check_head({**head(), "headers": [(b"x", b"y")] * MAX_HEADERS})
    check_head({**head(), "headers": [(b"x", b"y" * (MAX_HEADER_BYTES - 1))]})
    check_head(head(idempotency_key=b"order-42_retry.1~ok"))


@pytest.mark.parametrize(
    "value", [b"a\x00b", b"a\rb", b"a\nb", b"a\x7fb", b"a\x85b", b"a\xa0b"], ids=repr
)
def test_an_idempotency_key_with_a_control_character_is_refused(value: bytes) -> None:
    """NUL, CR, LF and DEL cannot come over HTTP/1.1 (the server refuses them), but they can
    from another server or proxy; C1 controls and the no-break space come as obs-text."""
    before = refusals(Rule.CONTROL_CHARACTER)
    with pytest.raises(Problem) as refused_problem:
        check_head(head(idempotency_key=value))
    assert refused_problem.value.status == 400
    assert refused_problem.value.detail is not None
    assert "header idempotency-key" in refused_problem.value.detail
    assert refusals(Rule.CONTROL_CHARACTER) == before + 1


def test_an_idempotency_key_with_a_c1_control_is_refused_over_http(
    served: tuple[httpx.Client, FastAPI],
) -> None:
    client, _ = served
    before = refusals(Rule.CONTROL_CHARACTER)
    response = client.post(
        f"/api/quotes/{AN_ID}/deposit",
        json={},
        headers={"idempotency-key": b"key-\x9b31m"},
    )
    refused(response, 400, "control-character", Rule.CONTROL_CHARACTER, before)


@pytest.mark.parametrize("kind", ["json", "form"])
def test_a_body_of_digit_groups_is_answered_at_once(
    served: tuple[httpx.Client, FastAPI], kind: str
) -> None:
    """The card-number rule tries every stretch of a run of digit groups: 512 KiB of "1 1 1 …"
    (no stretch of which passes Luhn) once held the event loop for a minute, every other
    request waiting. Checked within a budget, such a body is refused at once, as the card rule's
    refusal, without echoing it."""
    client, _ = served
    run = "1 " * (MAX_JSON_STRING_CHARS // 2 - 8)
    if kind == "json":
        response_of = lambda: client.post(  # noqa: E731
            "/healthz", json={f"{MARK}{i}": run for i in range(8)}, timeout=120
        )
    else:
        response_of = lambda: client.post(  # noqa: E731
            "/healthz", data={MARK: run * 8}, timeout=120
        )
    started = time.monotonic()
    response = response_of()
    elapsed = time.monotonic() - started
    problem = assert_problem(response, 400, "card-number-refused")
    assert "card number" in str(problem["detail"])
    assert "1 1 1" not in response.text
    assert elapsed < 3, f"{elapsed:.1f} s"


def post_routes(app: FastAPI) -> list[str]:
    """A URL of every route that takes POST (the sign-in pages, OAuth, the web app's pages: the
    routes a form is sent to), but the PSP's webhook, whose body is read only once its
    signature is verified (`tests/payments/test_webhooks.py`)."""
    return [
        url
        for _, url in walked(app)
        if "POST" in allowed_methods(app.routes, url) and url != WEBHOOK_PATH
    ]


@pytest.mark.parametrize("character", ["%00", "%01", "%0B", "%1B", "%7F", "%C2%85", "%C2%9B"])
def test_every_route_refuses_a_control_character_in_a_form_field(
    served: tuple[httpx.Client, FastAPI], character: str
) -> None:
    """A form's fields are ids as much as a query's (an organisation and a username at
    sign-in, a client id and a code at OAuth's token endpoint, a page's key): a control
    character in a name or a value is refused, as in the query, and counted. NUL keeps its own
    answer (a string that cannot be stored, 422), counted all the same."""
    client, app = served
    status, slug = (422, "invalid-request") if character == "%00" else (400, "control-character")
    for url in post_routes(app):
        for body, where in [
            (f"ok=1&id={MARK}{character}1", "form field 'id'"),
            (f"ok=1&{MARK}{character}1=1", "a form field name"),
        ]:
            before = refusals(Rule.CONTROL_CHARACTER)
            response = client.post(url, content=body, headers={"content-type": FORM})
            problem = assert_problem(response, status, slug)
            assert MARK not in response.text
            assert refusals(Rule.CONTROL_CHARACTER) == before + 1, url
            if status == 400:
                assert str(problem["detail"]).startswith("control_character: "), problem
                assert where in str(problem["detail"]), problem


def test_a_textarea_in_a_form_passes_the_control_character_rule(
    served: tuple[httpx.Client, FastAPI],
) -> None:
    """Line breaks and tabs are what a textarea sends, and format characters are ordinary text
    (an emoji sequence's joiner, the marks of right-to-left writing): none is refused."""
    client, _ = served
    text = "line one\r\nline two\tand \U0001f469\u200d\U0001f4bb \u05e9\u05dc\u05d5\u05dd\u200f"
    response = client.post("/healthz", data={"message": text})
    assert_problem(response, 405, "method-not-allowed")  # past the rules, to the router


def test_every_route_counts_a_form_past_its_field_limit(
    served: tuple[httpx.Client, FastAPI],
) -> None:
    """A form's fields are limited as a JSON object's members are, and counted the same way."""
    client, app = served
    fields = "&".join(f"{MARK}{n}=1" for n in range(MAX_FORM_FIELDS + 1))
    for url in post_routes(app):
        before = refusals(Rule.FORM_FIELDS)
        response = client.post(url, content=fields, headers={"content-type": FORM})
        assert_problem(response, 400, "malformed-body")
        assert MARK not in response.text
        assert refusals(Rule.FORM_FIELDS) == before + 1, url
