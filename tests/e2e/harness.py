"""The browser test harness: a running `ramparts demo`, signing in through the real pages,
watching a page for errors, checking accessibility with axe-core, and screenshots.

Every check runs under the pages' own strict CSP: axe-core is evaluated through the browser's
DevTools protocol (`page.evaluate`), which the CSP does not govern, and the CSP is never
loosened (no `bypass_csp`).
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pyotp
from playwright.sync_api import ConsoleMessage, Page, Request, Response

from ramparts.db.engine import DatabaseUrls
from tests.conftest import free_port
from tests.test_cli import owner_env, run, running

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "Demo",
    "User",
    "Watched",
    "axe",
    "enter_credentials",
    "one_time_code",
    "run_demo",
    "sign_in",
    "type_card",
]

CHROMIUM = "/usr/bin/chromium"
# The flags this machine needs: no sandbox as root, and no background calls to a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
#: What fails a page: axe-core's two highest impacts (the others are listed, not failed).
FAILING_IMPACTS = ("serious", "critical")
TOTP_STEP_SECONDS = 30


@dataclass(frozen=True)
class User:
    """A demo user, as `seed-demo --json` reports it."""

    tenant: str
    username: str
    password: str
    totp_secret: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Demo:
    """A running `ramparts demo`: its address, its sandbox PSP's, and its credentials report."""

    base: str
    psp: str
    report: dict[str, Any]
    urls: DatabaseUrls

    def user(self, username: str) -> User:
        (found,) = [u for u in self.report["users"] if u["username"] == username]
        return User(
            found["tenant"],
            found["username"],
            found["password"],
            found["totp_secret"],
            tuple(found["roles"]),
        )


@contextmanager
def run_demo(home: Path, urls: DatabaseUrls, **env: str) -> Iterator[Demo]:
    """`ramparts demo` on the fresh database `urls` (data under `home`), on a free port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = owner_env(home, urls, **env)
    with running(
        "demo", "--port", str(port), env=environment, url=f"{base}/healthz", within=90
    ) as started:
        (psp,) = [
            p
            for p in psutil.Process(started.process.pid).children(recursive=True)
            if any(part.endswith("localstripe") for part in p.cmdline())
        ]
        psp_port = psp.cmdline()[psp.cmdline().index("--port") + 1]
        seeded = run("seed-demo", "--json", env={**environment, "RAMPARTS_PUBLIC_URL": base})
        assert seeded.returncode == 0, seeded.stderr
        yield Demo(base, f"http://127.0.0.1:{psp_port}", json.loads(seeded.stdout), urls)


#: The last TOTP step each secret signed in with, in this run. The server accepts a step once
#: and never an earlier one (replay protection), with one step of drift either way.
_LAST_STEP: dict[str, int] = {}


def one_time_code(user: User) -> str:
    """A TOTP code the server will accept for `user` now: the current step's, else the next
    step's (drift), else, when both are used up, the next step's as soon as it is in reach
    (a wait of at most one step, and only that long)."""
    now = time.time()
    current = int(now) // TOTP_STEP_SECONDS
    step = max(current, _LAST_STEP.get(user.totp_secret, -1) + 1)
    if step > current + 1:
        time.sleep((step - 1) * TOTP_STEP_SECONDS - now + 0.05)
    _LAST_STEP[user.totp_secret] = step
    return pyotp.TOTP(user.totp_secret).at(step * TOTP_STEP_SECONDS)


def sign_in(page: Page, user: User) -> None:
    """Sign in as a person does: the landing page's "Sign in", the organisation, username and
    password, then the code from the user's authenticator. Ends on the start page, `/app`.
    The page's context has the demo as its `base_url`."""
    page.goto("/")
    page.get_by_role("link", name="Sign in").click()
    enter_credentials(page, user)
    page.wait_for_url(lambda url: urlsplit(url).path == "/app", timeout=15_000)


def enter_credentials(page: Page, user: User) -> None:
    """On the sign-in page: the password step, then the second factor."""
    page.wait_for_url(lambda url: urlsplit(url).path == "/login")
    form = page.locator("form[action='/login']")
    form.get_by_label("Organisation").fill(user.tenant)
    form.get_by_label("Username").fill(user.username)
    form.get_by_label("Password").fill(user.password)
    form.get_by_role("button", name="Continue", exact=True).click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/login/mfa")
    page.get_by_label("Authenticator code").fill(one_time_code(user))
    page.get_by_role("button", name="Sign in").click()


_CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) =>
  window.rampartsCspViolation(`${event.violatedDirective} blocked ${event.blockedURI}`));
"""


class Watched:
    """Everything a page does wrong, from the moment this is made: a console error, an
    uncaught exception, a failed request (refused, or answered with a status >= 400), a CSP
    violation. `allow` names the answers a test provokes, as "<status> <path>" (say
    "403 /app/admin"): those are kept in `allowed`, in order, with the browser's console line
    for each. `check()` fails the test on the rest."""

    def __init__(self, page: Page, allow: Iterable[str] = ()) -> None:
        self.allow = frozenset(allow)
        self.allowed: list[str] = []
        self.problems: list[str] = []
        self._allowed_urls: set[str] = set()
        self._console: list[tuple[str, str]] = []  # (location url, text) of console errors
        self._page = page
        self._handlers: dict[str, Callable[..., None]] = {
            "console": self._on_console,
            "pageerror": lambda error: self.problems.append(f"{page.url}: {error}"),
            "requestfailed": self._on_request_failed,
            "response": self._on_response,
        }
        for event, handler in self._handlers.items():
            page.on(event, handler)  # type: ignore[call-overload]
        # A page kept for several steps gets a new watcher for each: the page's CSP
        # listener is installed once and reports to the latest.
        earlier = _WATCHERS.get(page)
        if earlier is None:
            page.expose_function(
                "rampartsCspViolation",
                lambda what: _WATCHERS[page].problems.append(f"CSP: {what}"),
            )
            page.add_init_script(_CSP_LISTENER)
        else:
            earlier.stop()
        _WATCHERS[page] = self

    def stop(self) -> None:
        """Stop watching (a later watcher of the same page takes over)."""
        for event, handler in self._handlers.items():
            self._page.remove_listener(event, handler)
        self._handlers = {}

    def _on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.problems.append(f"CSP: {message.text}")
        elif message.type == "error":
            self._console.append((message.location.get("url", ""), message.text))

    def _on_request_failed(self, request: Request) -> None:
        if request.failure == "net::ERR_ABORTED":
            # The page moved on before the load ended (a navigation cancels what the page
            # was still fetching, say its icon): nothing failed. A refusal (CSP, network)
            # has its own error.
            return
        self.problems.append(f"{request.failure} {request.method} {request.url}")

    def _on_response(self, response: Response) -> None:
        if response.status < 400:
            return
        answer = f"{response.status} {urlsplit(response.url).path}"
        if answer in self.allow:
            self.allowed.append(answer)
            self._allowed_urls.add(response.url)
        else:
            self.problems.append(f"{response.status} {response.request.method} {response.url}")

    def check(self) -> None:
        provoked = "Failed to load resource"
        errors = [
            f"console: {text} ({url})"
            for url, text in self._console
            if not (text.startswith(provoked) and url in self._allowed_urls)
        ]
        everything = self.problems + errors
        assert not everything, "the page went wrong:\n" + "\n".join(everything)


#: The watcher each page reports its CSP violations to.
_WATCHERS: weakref.WeakKeyDictionary[Page, Watched] = weakref.WeakKeyDictionary()


@cache
def _axe_source() -> str:
    return AXE.read_text(encoding="utf-8")


def axe(page: Page) -> list[dict[str, Any]]:
    """Run axe-core on the page as it is now; fail on any serious or critical violation,
    listed by rule, impact, help and the elements concerned. Returns every violation (the
    minor and moderate ones too) for a test that wants more."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_axe_source())
    results = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    violations: list[dict[str, Any]] = results["violations"]
    failing = [v for v in violations if v["impact"] in FAILING_IMPACTS]
    assert not failing, f"axe-core on {page.url}:\n" + "\n".join(map(_readable, failing))
    return violations


def _readable(violation: dict[str, Any]) -> str:
    lines = [f"- {violation['id']} ({violation['impact']}): {violation['help']}"]
    for node in violation["nodes"]:
        target = " ".join(map(str, node["target"]))
        summary = " ".join(node.get("failureSummary", "").split())
        lines.append(f"    {target}: {summary}")
    return "\n".join(lines)


def type_card(page: Page, number: str) -> None:
    """Into the PSP's card element (mounted by the PSP's Stripe.js in #pay-card)."""
    element = page.locator("#pay-card")
    element.locator("input").first.wait_for(timeout=15_000)
    # The sandbox's element: bare inputs named by their placeholders; Stripe's is a frame.
    element.get_by_placeholder("number").fill(number)
    element.get_by_placeholder("exp_month").fill("12")
    element.get_by_placeholder("exp_year").fill("34")
    element.get_by_placeholder("cvc").fill("123")
    element.get_by_placeholder("postal_code").fill("10115")
