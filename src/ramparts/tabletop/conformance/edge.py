"""Live check of PLT-3, the edge: the security headers on a sample of every kind of answer
(an API call, a page, a static file, an error, a refusal), CORS for a foreign origin, the
request rules, TLS 1.3 only (on a second server of the instance with a throwaway
certificate: the demo serves plain HTTP), and the assistant's abuse detection."""

from __future__ import annotations

import re
import socket
import ssl
import tempfile
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ramparts.tabletop.conformance.checks import Outcome, check, fail, passed
from ramparts.tabletop.conformance.operating import second_server
from ramparts.tabletop.conformance.playing import admin_of, answered, ask, calling, problem_slug
from ramparts.tabletop.target import Target

__all__ = ["the_edge_holds"]

PLT3 = (
    "TLS 1.3 only; HSTS, a CSP without unsafe-inline and with frame-ancestors 'none', and "
    "nosniff on every answer; no CORS grant to a foreign origin; oversized, header-stuffed, "
    "control-character and too-deep requests refused with their problem; repeated refused "
    "assistant calls slow their user down"
)
FOREIGN = "https://drill.invalid"
#: Refused tool calls in one message: the strikes that slow a user down (the default
#: RAMPARTS_AI_THROTTLE_AFTER, 5 in 10 minutes).
STRIKES = 5
_STATIC = re.compile(r'(?:href|src)="(/static/[^"?#]+)')


def _header_problems(response: httpx.Response) -> list[str]:
    headers = response.headers
    problems = []
    hsts = re.search(r"max-age=(\d+)", headers.get("strict-transport-security", ""))
    if hsts is None or int(hsts.group(1)) <= 0:
        problems.append("no HSTS")
    policy = headers.get("content-security-policy", "")
    if not policy or "unsafe-inline" in policy or "unsafe-eval" in policy:
        problems.append("no strict CSP")
    if "frame-ancestors 'none'" not in policy:
        problems.append("no frame-ancestors 'none'")
    if headers.get("x-content-type-options", "").lower() != "nosniff":
        problems.append("no nosniff")
    return problems


def _samples(target: Target, client: httpx.Client) -> list[tuple[str, httpx.Response]]:
    """One answer of each kind, the request rules' refusals among them."""
    home = client.get("/")
    static = _STATIC.findall(home.text)
    deep = "[" * 40 + "]" * 40
    token = admin_of(target, target.tenants()[0]).access_token
    samples = [
        ("GET / (a page)", home),
        ("GET /openapi.json (API)", client.get("/openapi.json")),
        (
            "GET /api/assistant/tools (API, signed in)",
            client.get("/api/assistant/tools", headers={"Authorization": f"Bearer {token}"}),
        ),
        ("GET /drill-no-such-page (an error)", client.get("/drill-no-such-page")),
        ("POST /api/assistant unsigned (a refusal)", client.post("/api/assistant", json={})),
        ("GET a 9,000-byte URL", client.get("/api/assistant/tools?q=" + "a" * 9_000)),
        (
            "GET with 70 headers",
            client.get("/healthz", headers={f"x-drill-{i}": "1" for i in range(70)}),
        ),
        ("GET a path with a NUL", client.get("/api/assistant/%00tools")),
        (
            "POST JSON nested 40 deep",
            client.post(
                "/api/assistant", content=deep, headers={"content-type": "application/json"}
            ),
        ),
    ]
    if static:
        samples.insert(1, (f"GET {static[0]} (static)", client.get(static[0])))
    return samples


#: What each planted request must be answered with: (status, problem type).
RULES = {
    "GET a 9,000-byte URL": (414, "url-too-long"),
    "GET with 70 headers": (431, "too-many-headers"),
    "GET a path with a NUL": (400, "control-character"),
    "POST JSON nested 40 deep": (422, "json-too-deep"),
}


def _headers_and_rules(target: Target, evidence: list[str]) -> list[str]:
    wrong = []
    with target.client() as client:
        samples = _samples(target, client)
        preflight = client.options(
            "/api/assistant",
            headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"},
        )
        simple = client.get("/openapi.json", headers={"Origin": FOREIGN})
    for what, response in samples:
        problems = _header_problems(response)
        evidence.append(answered(what, response) + (f": {', '.join(problems)}" if problems else ""))
        if problems:
            wrong.append(f"{what}: {', '.join(problems)}")
        if what in RULES and (response.status_code, problem_slug(response)) != RULES[what]:
            wrong.append(f"{what} was answered {response.status_code}, not {RULES[what][0]}")
    if not any("(static)" in what for what, _ in samples):
        wrong.append("the home page links no static file to sample")
    granted = [r.headers.get("access-control-allow-origin") for r in (preflight, simple)]
    evidence.append(
        answered(f"CORS preflight from {FOREIGN}", preflight)
        + f"; a GET from it: allow-origin {granted[1]!r}"
    )
    if any(granted):
        wrong.append(f"the foreign origin {FOREIGN} was granted {granted}")
    return wrong


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (one day), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ramparts drill")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "drill.pem", directory / "drill.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _handshake(port: int, trusted: Path, version: ssl.TLSVersion) -> str:
    """The protocol a client limited to `version` gets, or why it got none."""
    context = ssl.create_default_context(cafile=str(trusted))
    context.minimum_version = context.maximum_version = version
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return str(tls.version())
    except (ssl.SSLError, OSError) as exc:
        return f"refused ({getattr(exc, 'reason', None) or type(exc).__name__})"


def _tls(target: Target, evidence: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="ramparts-tls-") as scratch:
        cert, key = _certificate(Path(scratch))
        trusted = ssl.create_default_context(cafile=str(cert))
        arguments = ("--tls-cert", str(cert), "--tls-key", str(key))
        with second_server(target, {}, arguments=arguments, ready=trusted) as base:
            port = int(base.rsplit(":", 1)[1])
            old = _handshake(port, cert, ssl.TLSVersion.TLSv1_2)
            new = _handshake(port, cert, ssl.TLSVersion.TLSv1_3)
            with httpx.Client(base_url=base, verify=trusted, timeout=10) as client:
                health = client.get("/healthz")
    evidence.append(
        f"a second server of the instance with a throwaway certificate: a TLS 1.2 client → "
        f"{old}; a TLS 1.3 client → {new}; " + answered("GET /healthz over it", health)
    )
    wrong = []
    if not old.startswith("refused"):
        wrong.append(f"a TLS 1.2 client was served ({old})")
    if new != "TLSv1.3" or health.status_code != 200 or _header_problems(health):
        wrong.append(f"a TLS 1.3 client was not served properly ({new}, {health.status_code})")
    return wrong


def _abusive(target: Target) -> str:
    """The person slowed down: the last tenant's second-last demo user (the last one's
    budget is spent by AI-3), whom the checks that lead with the first tenant do not need."""
    users = [u for u in target.report.get("users", []) if u.get("tenant") == target.tenants()[-1]]
    return str(users[-2]["username"])


def _abuse(target: Target, evidence: list[str]) -> list[str]:
    """Refused calls count against their user: past the limit, the next requests are
    slowed to a trickle (429) and an abuse alert is raised (counted on /metrics)."""
    session = target.session(_abusive(target))
    alerts_before = _abuse_alerts(target)
    probe = ask(target, session, "Go on.", calling(*[("drill_no_such_tool", {})] * STRIKES))
    reasons = {str(a.get("reason")) for a in probe.actions()}
    statuses = []
    for _ in range(4):
        statuses.append(ask(target, session, "And again.", [{"text": "ok"}]).response)
        if statuses[-1].status_code == 429:
            break
    alerts = _abuse_alerts(target)
    evidence.append(
        f"{session.username}: {STRIKES} calls of a tool that does not exist → refused "
        f"({', '.join(sorted(reasons))}); then "
        + ", ".join(f"{r.status_code} {problem_slug(r)}".rstrip() for r in statuses)
        + f"; ramparts_alerts_total{{kind=ai_abuse}} {alerts_before} → {alerts}"
    )
    last = statuses[-1]
    if last.status_code != 429 or problem_slug(last) != "rate-limited":
        return ["repeated refused calls did not slow their user down"]
    if alerts is not None and alerts_before is not None and alerts <= alerts_before:
        return ["slowing a user down raised no abuse alert"]
    return []


def _abuse_alerts(target: Target) -> float | None:
    """The instance's abuse alerts so far, from /metrics (None: not open to this client)."""
    with target.client() as client:
        metrics = client.get("/metrics")
    if metrics.status_code != 200:
        return None
    found = re.search(r'^ramparts_alerts_total\{kind="ai_abuse"\} ([0-9.e+]+)$', metrics.text, re.M)
    return float(found.group(1)) if found else 0.0


@check("PLT-3")
def the_edge_holds(target: Target) -> Outcome:
    evidence: list[str] = []
    wrong = _headers_and_rules(target, evidence)
    wrong += _tls(target, evidence)
    wrong += _abuse(target, evidence)
    if wrong:
        return fail(PLT3, "; ".join(wrong), evidence)
    return passed(
        PLT3,
        "every sampled answer carried HSTS, a strict CSP, frame-ancestors 'none' and nosniff; "
        "the foreign origin got no CORS grant; each planted request got its problem; TLS 1.2 "
        "was refused and 1.3 served; refused calls slowed their user down and raised an alert",
        evidence,
    )
