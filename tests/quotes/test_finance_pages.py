"""Finance's pages and the books API over real HTTP, with the real sandbox PSP: a deposit
charged through the page once however often the form is sent, refunds and disbursements
requested and left pending for a second Finance user, other roles refused, and each tenant
reading its own ledger and only its own reconciliation items."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import psycopg
import pytest

from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.payments.ledger import Ledger
from ramparts.payments.sandbox import Sandbox
from ramparts.payments.tenant_reconciliation import tenant_runs
from ramparts.quotes.roles import BUYER, FINANCE
from tests.ai.test_assistant import sign_in
from tests.identity.helpers import provision
from tests.payments.conftest import psp_kms, sandbox  # noqa: F401 - fixtures
from tests.quotes.money_world import World, make_web_world
from tests.web.sessions_helpers import page_csrf, sign_in_web

PENDING = "a second Finance user must approve it in Approvals"


@pytest.fixture
def world(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
    sandbox: Sandbox,  # noqa: F811 - the fixture
) -> World:
    return make_web_world(serve_app, urls, psp_kms, sandbox)


@pytest.fixture
def browser_of(
    world: World,
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
) -> Iterator[Callable[[str], httpx.Client]]:
    """Browsers signed in to the web app, each as a new user of the world's tenant."""
    opened: list[httpx.Client] = []

    def open_as(role: str) -> httpx.Client:
        browser = httpx.Client(base_url=world.server.base_url, timeout=30)
        opened.append(browser)
        tenant = world.people["finance"].account.tenant
        landed = sign_in_web(browser, provision(urls, psp_kms, roles=(role,), tenant=tenant))
        assert landed.status_code == 200, landed.text
        return browser

    yield open_as
    for browser in opened:
        browser.close()


def form_key(page: httpx.Response, action: str) -> str:
    """The idempotency key drawn with the form posting to `action`."""
    found = re.search(
        rf'action="{re.escape(action)}"[^>]*>\s*<input type="hidden" name="csrf" value="[^"]+">'
        r'\s*<input type="hidden" name="key" value="([^"]+)">',
        page.text,
    )
    assert found, f"no form to {action}"
    return found.group(1)


def send(browser: httpx.Client, action: str, key: str, **fields: str) -> httpx.Response:
    page = browser.get("/app/finance")
    return browser.post(action, data={"csrf": page_csrf(page), "key": key, **fields})


def payments_of(world: World, quote: str) -> list[dict[str, Any]]:
    listed = world.server.get(
        "/api/payments", params={"quote_id": quote}, headers=world.people["finance"].headers
    )
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


def test_finance_charges_a_deposit_through_the_page_once(
    world: World,
    browser_of: Callable[[str], httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
) -> None:
    browser = browser_of(FINANCE)
    quote = world.accepted_quote()
    page = browser.get("/app/finance")
    assert page.status_code == 200, page.text
    assert "Deposits to charge" in page.text
    assert "Office chairs" in page.text
    assert "150.00 EUR" in page.text  # the default deposit: 30 % of 500.00 EUR
    action = f"/app/finance/quotes/{quote}/deposit"
    key = form_key(page, action)
    first = send(browser, action, key)
    again = send(browser, action, key)  # a double submit of the same form
    for sent in (first, again):
        assert sent.status_code == 303, sent.text
        assert sent.headers["location"] == "/app/finance?done=deposit"
    charged = payments_of(world, quote)
    assert [(p["amount"], p["currency"]) for p in charged] == [(15_000, "eur")]
    after = browser.get("/app/finance?done=deposit")
    assert "Deposit charged" in after.text
    assert action not in after.text  # charged: no longer to charge
    assert "Waiting for the buyer to pay" in after.text
    assert charged[0]["checkout_url"] in after.text


def test_refunds_and_disbursements_are_requested_and_wait_for_a_second_person(
    world: World,
    browser_of: Callable[[str], httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
) -> None:
    browser = browser_of(FINANCE)
    refunded = world.deposit(world.accepted_quote())
    disbursed_quote = world.accepted_quote()
    world.deposit(disbursed_quote)
    page = browser.get("/app/finance")
    assert page.text.count("Request a refund") == 2  # both paid
    refund = f"/app/finance/payments/{refunded}/refund"

    bad = send(browser, refund, form_key(page, refund), amount="12,5")
    assert bad.status_code == 422
    assert "Refund amount" in bad.text
    assert "Nothing was sent" in bad.text
    assert world.approvals() == []

    asked = send(browser, refund, form_key(page, refund), amount="120.5")
    assert asked.headers["location"] == "/app/finance?done=refund"
    assert PENDING in browser.get(asked.headers["location"]).text
    disburse = f"/app/finance/quotes/{disbursed_quote}/disbursement"
    paid_out = send(browser, disburse, form_key(page, disburse))
    assert paid_out.headers["location"] == "/app/finance?done=disbursement"
    assert PENDING in browser.get(paid_out.headers["location"]).text
    pending = {a["tool"]: a for a in world.approvals()}
    assert sorted(pending) == ["disburse_deposit", "issue_refund"]
    assert {a["status"] for a in pending.values()} == {"pending"}
    assert pending["issue_refund"]["arguments"]["amount"] == 12_050  # 120.5 EUR, exactly
    assert world.rows("payment_refunds", refunded) == []  # nothing moved before approval

    unpaid = world.accepted_quote()
    refused = send(browser, f"/app/finance/quotes/{unpaid}/disbursement", str(uuid.uuid4()))
    assert refused.status_code == 409
    assert "Not possible right now" in refused.text
    assert "paid" in refused.text


def test_other_roles_are_refused_the_finance_pages_and_the_books(
    world: World,
    browser_of: Callable[[str], httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
) -> None:
    browser = browser_of(BUYER)
    for path in ("/app/finance", "/app/finance/ledger", "/app/finance/reconciliation"):
        page = browser.get(path)
        assert page.status_code == 403, path
        assert "This needs the permission Quotes::" in page.text
    assert 'href="/app/finance"' not in browser.get("/app").text  # not in the buyer's nav
    for who in ("buyer", "seller"):
        for path in ("/api/ledger", "/api/reconciliation"):
            answer = world.server.get(path, headers=world.people[who].headers)
            assert answer.status_code == 403, (who, path)


def test_the_ledger_api_reads_the_callers_tenant_only_newest_first(
    world: World,
    browser_of: Callable[[str], httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
) -> None:
    first = world.deposit(world.accepted_quote())
    second = world.deposit(world.accepted_quote())
    other, other_headers = sign_in(world.server, urls, psp_kms, FINANCE)
    asyncio.run(_post_deposit(urls, other.tenant_id, "ch_other_tenant_1"))

    def book(headers: dict[str, str], **params: Any) -> dict[str, Any]:
        answer = world.server.get("/api/ledger", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    ours = book(world.people["finance"].headers)
    assert [e["payment"] for e in ours["items"]] == [str(second), str(first)]
    assert ours["next"] is None
    posting = ours["items"][0]["postings"]
    assert {(p["side"], p["amount"], p["currency"]) for p in posting} == {
        ("debit", 50_000, "EUR"),
        ("credit", 50_000, "EUR"),
    }
    page = book(world.people["finance"].headers, limit=1)
    assert [e["payment"] for e in page["items"]] == [str(second)]
    rest = book(world.people["finance"].headers, limit=1, before=page["next"])
    assert [e["payment"] for e in rest["items"]] == [str(first)]
    theirs = book(other_headers)
    assert [e["reference"] for e in theirs["items"]] == ["ch_other_tenant_1"]
    bad = world.server.get(
        "/api/ledger", params={"limit": 10_000}, headers=world.people["finance"].headers
    )
    assert bad.status_code == 422
    # Found by the DAST: a cursor past PostgreSQL's bigint was a 500; it is refused.
    for before, status in ((2**63, 422), (2**63 - 1, 200)):
        answer = world.server.get(
            "/api/ledger", params={"before": before}, headers=world.people["finance"].headers
        )
        assert answer.status_code == status, answer.text

    browser = browser_of(FINANCE)
    shown = browser.get("/app/finance/ledger")
    assert shown.status_code == 200
    assert "500.00 EUR" in shown.text
    assert "ch_other_tenant_1" not in shown.text


async def _post_deposit(urls: DatabaseUrls, tenant: uuid.UUID, reference: str) -> None:
    database = Database(urls.app, pool_size=1)
    try:
        async with database.tenant_session(tenant) as session:
            await Ledger().record_deposit(
                session,
                payment=str(uuid.uuid4()),
                amount=7_000,
                currency="eur",
                reference=reference,
            )
    finally:
        await database.dispose()


def _store_run(urls: DatabaseUrls, drift: list[dict[str, Any]]) -> uuid.UUID:
    """A run as `ramparts reconcile` stores it (as the owner), with these drift items."""
    now = datetime.now(UTC)
    with psycopg.connect(libpq(urls.owner)) as conn:
        row = conn.execute(
            "INSERT INTO reconciliation_runs (day, started_at, finished_at, status, "
            "psp_transactions, psp_objects, ledger_entries, matched, drift_count, drift) "
            "VALUES (%s, %s, %s, 'drift', 9, 9, 9, 6, %s, %s::jsonb) RETURNING id",
            (date(2001, 2, 3), now, now, len(drift), json.dumps(drift)),
        ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _item(psp_id: str, tenants: list[str], entries: list[str]) -> dict[str, Any]:
    return {
        "type": "duplicate",
        "kind": "deposit",
        "psp_id": psp_id,
        "detail": "two live ledger entries for one PSP object",
        "tenants": tenants,
        "psp": {"amount": 7_000, "currency": "eur", "status": "succeeded"},
        "ledger": {"amount": 7_000, "currency": "eur"},
        "entries": entries,
        "payment": None,
    }


def test_a_reconciliation_run_shows_each_tenant_only_its_own_items(
    world: World,
    browser_of: Callable[[str], httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
) -> None:
    ours, theirs = world.tenant_id, uuid.uuid4()
    asyncio.run(_post_deposit(urls, ours, "ch_ours_1"))
    asyncio.run(_post_deposit(urls, theirs, "ch_theirs_1"))
    our_entry = str(asyncio.run(_entry_id(urls, ours, "ch_ours_1")))
    their_entry = str(asyncio.run(_entry_id(urls, theirs, "ch_theirs_1")))
    run = _store_run(
        urls,
        [
            _item("ch_theirs_1", [str(theirs)], [their_entry]),
            _item("ch_shared", sorted([str(ours), str(theirs)]), [our_entry, their_entry]),
            _item("ch_ours_1", [str(ours)], [our_entry]),
        ],
    )

    seen = {r.id: r for r in asyncio.run(_runs_of(urls, ours))}
    assert [i["psp_id"] for i in seen[run].drift] == ["ch_shared", "ch_ours_1"]
    for item in seen[run].drift:
        assert item["tenants"] == [str(ours)]
        assert item["entries"] == [our_entry]
    # An item that names two tenants keeps neither side's amounts: one may be the other's.
    shared = next(i for i in seen[run].drift if i["psp_id"] == "ch_shared")
    assert "psp" not in shared
    assert "ledger" not in shared
    assert (
        next(i for i in seen[run].drift if i["psp_id"] == "ch_ours_1")["ledger"]["amount"] == 7_000
    )
    assert str(theirs) not in json.dumps(seen[run].as_json())
    assert their_entry not in json.dumps(seen[run].as_json())
    their_view = {r.id: r for r in asyncio.run(_runs_of(urls, theirs))}
    assert [i["psp_id"] for i in their_view[run].drift] == ["ch_theirs_1", "ch_shared"]
    assert str(ours) not in json.dumps(their_view[run].as_json())
    assert asyncio.run(_runs_of(urls, None)) == []  # no tenant: nothing

    answer = world.server.get("/api/reconciliation", headers=world.people["finance"].headers)
    assert answer.status_code == 200
    shown = next(r for r in answer.json()["items"] if r["id"] == str(run))
    assert (shown["status"], shown["drift_count"]) == ("drift", 2)
    assert "psp_transactions" not in shown  # the whole PSP account's counts: no tenant's
    page = browser_of(FINANCE).get("/app/finance/reconciliation")
    assert page.status_code == 200
    assert "ch_ours_1" in page.text
    assert "ch_theirs_1" not in page.text


async def _entry_id(urls: DatabaseUrls, tenant: uuid.UUID, reference: str) -> uuid.UUID:
    database = Database(urls.app, pool_size=1)
    try:
        async with database.tenant_session(tenant) as session:
            entries = await Ledger().latest(session, limit=200)
    finally:
        await database.dispose()
    return next(e.id for e in entries if e.reference == reference)


async def _runs_of(urls: DatabaseUrls, tenant: uuid.UUID | None) -> list[Any]:
    """The runs as the runtime role reads them in `tenant`'s session (None: no tenant set)."""
    database = Database(urls.app, pool_size=1)
    try:
        if tenant is None:
            async with database.session() as session:
                return await tenant_runs(session, 100)
        async with database.tenant_session(tenant) as session:
            return await tenant_runs(session, 100)
    finally:
        await database.dispose()
