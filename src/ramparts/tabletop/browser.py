"""A person's browser signed in to the web app, as a drill needs one for the pages: the
app's own sign-in (`/app/login` → the authorization request → the password and TOTP forms →
`/app/callback`), which leaves the session cookie in the client's jar.

A sign-in takes a TOTP step of its user (`Target.code_for`): sign a user in once per drill."""

from __future__ import annotations

import re

import httpx

from ramparts.tabletop.target import SignInError, Target

__all__ = ["signed_in_browser"]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
#: Redirects a sign-in follows at most (start, authorize, login, MFA, callback and back).
_MOST_REDIRECTS = 8


def signed_in_browser(target: Target, username: str, *, next_path: str = "/app") -> httpx.Client:
    """A client holding `username`'s web session (the caller closes it), having landed on
    `next_path`."""
    browser = target.client()
    try:
        _sign_in(target, browser, username, next_path)
    except BaseException:
        browser.close()
        raise
    return browser


def _sign_in(target: Target, browser: httpx.Client, username: str, next_path: str) -> None:
    user = target.user(username)
    who = f"{username} of {user['tenant']}"
    form = _follow(browser, browser.get("/app/login", params={"next": next_path}))
    answer = browser.post(
        "/login",
        data={
            "tenant": user["tenant"],
            "username": username,
            "password": user["password"],
            "csrf": _csrf(form, who),
        },
    )
    step = answer.headers.get("location", "")
    if answer.status_code != 303 or not step.endswith("/mfa"):
        raise SignInError(f"{who}: the password was refused ({answer.status_code})")
    mfa = browser.get(step)
    final = browser.post(step, data={"otp": target.code_for(username), "csrf": _csrf(mfa, who)})
    landed = _follow(browser, final)
    if landed.status_code != 200 or landed.url.path != next_path:
        raise SignInError(f"{who}: the web sign-in ended at {landed.status_code}")


def _follow(browser: httpx.Client, answer: httpx.Response) -> httpx.Response:
    """`answer`, after following its redirects within the instance."""
    for _ in range(_MOST_REDIRECTS):
        if not answer.is_redirect:
            return answer
        answer = browser.get(answer.headers["location"])
    raise SignInError("the web sign-in redirected too many times")


def _csrf(page: httpx.Response, who: str) -> str:
    found = _CSRF.search(page.text)
    if found is None:
        raise SignInError(f"{who}: the sign-in page ({page.status_code}) carries no CSRF token")
    return found.group(1)
