"""The PSP adapter: Stripe, through its official SDK (`stripe.StripeClient`).

The same code path serves production (Stripe) and development (the localstripe sandbox,
`ramparts.payments.sandbox`): only the API base differs. The API key comes from the KMS
(secret `psp/stripe/api-key`), never from the environment or a request.

Every object the runtime creates at the PSP carries its tenant in metadata
(`TENANT_METADATA_KEY`), so a webhook event names the tenant through the PSP object the runtime
made, never through anything the caller sends; reading an object back checks that tag, so one
tenant can never act on another's object by id.

Outbound writes send an idempotency key derived from the tenant, the operation and the caller's
own `Idempotency-Key` (`derive_idempotency_key`): the same request retried, by the SDK or after a
crash, reaches Stripe with the same key and Stripe answers with the first result. Retries are
the SDK's own (`max_network_retries`): it retries connection errors, 409 and every 5xx (and
obeys `Stripe-Should-Retry`), with exponential backoff from 0.5 s to at most 5 s and jitter
(each delay drawn from [d/2, d]), reusing the same idempotency key on every attempt. Nothing
here retries a second time around it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import stripe
from pydantic import SecretStr

from ramparts.crypto.kms import Kms

__all__ = [
    "API_KEY_SECRET",
    "TENANT_METADATA_KEY",
    "BalanceTransaction",
    "Charge",
    "PaymentIntent",
    "PaymentMethod",
    "Payout",
    "PspDeclinedError",
    "PspError",
    "PspMovement",
    "PspNotFoundError",
    "Refund",
    "StripePsp",
    "derive_idempotency_key",
]

#: The KMS secret holding the Stripe secret key (`sk_live_…`, `sk_test_…`).
API_KEY_SECRET = "psp/stripe/api-key"  # noqa: S105 - the secret's name, not its value
#: The metadata key that names the owning tenant on every PSP object the runtime creates.
TENANT_METADATA_KEY = "ramparts_tenant"
#: Retries of a failed call by the SDK (see the module docstring).
DEFAULT_NETWORK_RETRIES = 3
_CURRENCY = re.compile(r"[a-z]{3}")
# Stripe's largest amount is 8 digits for most currencies; more is a bug upstream.
_MAX_AMOUNT = 99_999_999


class PspError(Exception):
    """The PSP refused or could not be reached. The message names the operation and Stripe's
    error code, never a key, a card detail or the PSP's raw message.

    `definitive`: the PSP answered with a refusal (a 4xx other than 409 and 429), so nothing
    was done; otherwise (no answer, 409, 429, 5xx) the call may have taken effect at the PSP,
    and only the same call again, with the same idempotency key, settles it."""

    definitive = False

    def __init__(self, message: str, *, definitive: bool = False) -> None:
        super().__init__(message)
        self.definitive = definitive


class PspDeclinedError(PspError):
    """The card was declined (Stripe `card_error`); `code` is Stripe's decline code."""

    def __init__(self, message: str, code: str | None) -> None:
        super().__init__(message, definitive=True)
        self.code = code


class PspNotFoundError(PspError):
    """No such object at the PSP, or it belongs to another tenant (the same answer for both,
    so an id teaches nothing about other tenants)."""

    def __init__(self, message: str, *, definitive: bool = True) -> None:
        super().__init__(message, definitive=definitive)


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    status: str
    amount: int
    currency: str
    client_secret: str | None
    tenant_id: uuid.UUID
    metadata: Mapping[str, str]
    latest_charge: str | None


@dataclass(frozen=True)
class PaymentMethod:
    """A payment method the payer made at the PSP (Stripe.js tokenized the card there): its
    id, its type and, for a card, the PSP's fingerprint of the card number (the same card
    always has the same one). Nothing else of the card is kept or shown."""

    id: str
    type: str
    card_fingerprint: str | None


@dataclass(frozen=True)
class Refund:
    id: str
    status: str
    amount: int
    currency: str
    payment_intent: str | None


@dataclass(frozen=True)
class Payout:
    """Money sent out of the PSP balance (`po_…`); `status` is Stripe's: pending, in_transit,
    paid, failed, canceled."""

    id: str
    status: str
    amount: int
    currency: str


@dataclass(frozen=True)
class PspMovement:
    """A charge, refund or payout as the PSP has it now: what reconciliation compares with
    the ledger. Read account-wide (every tenant's), for the operator only: never shown to a
    tenant."""

    id: str
    object: str  # "charge", "refund", "payout", or another source type
    amount: int  # minor units, positive
    currency: str  # lowercase, as the PSP writes it
    status: str
    created: int
    #: The tenant the runtime tagged it with (a charge: its PaymentIntent's tag), if any.
    tenant_id: uuid.UUID | None = None
    payment_intent: str | None = None
    payment_intent_status: str | None = None
    balance_transaction: str | None = None


@dataclass(frozen=True)
class BalanceTransaction:
    id: str
    type: str
    amount: int
    fee: int
    net: int
    currency: str
    source: str | None
    status: str
    created: int
    #: The source itself, when the listing asked for it (`sources=True`).
    source_object: PspMovement | None = None


@dataclass(frozen=True)
class Charge:
    """A PaymentIntent's charge: the money that reached the PSP, and what the PSP kept of it
    (`balance_transaction.fee`; None until the PSP has booked it)."""

    id: str
    status: str
    amount: int
    currency: str
    payment_intent: str
    balance_transaction: BalanceTransaction | None


def derive_idempotency_key(tenant_id: uuid.UUID, operation: str, key: str) -> str:
    """The idempotency key sent to the PSP for `operation` done under the caller's `key`.

    Deterministic, so every retry and every process sends the same one; scoped by tenant and
    operation, so two tenants (or a charge and a refund) using the same caller key never
    collide at the PSP; hashed, so the caller's key does not travel to the PSP as it is.
    """
    digest = hmac.new(tenant_id.bytes, f"{operation}\x00{key}".encode(), hashlib.sha256).hexdigest()
    return f"ramparts-{digest}"


def _check_money(amount: int, currency: str) -> None:
    if type(amount) is not int or not 0 < amount <= _MAX_AMOUNT:
        raise ValueError(f"amount must be an integer of minor units in 1..{_MAX_AMOUNT}")
    if not _CURRENCY.fullmatch(currency):
        raise ValueError("currency must be a lowercase ISO 4217 code")


def _keyed(tenant_id: uuid.UUID, operation: str, key: str) -> stripe.RequestOptions:
    """The request options of a write: its derived idempotency key."""
    return {"idempotency_key": derive_idempotency_key(tenant_id, operation, key)}


def _tenant_of(metadata: Mapping[str, str]) -> uuid.UUID | None:
    try:
        return uuid.UUID(metadata[TENANT_METADATA_KEY])
    except (KeyError, ValueError):
        return None


def _error(operation: str, exc: stripe.StripeError) -> PspError:
    code = exc.code or type(exc).__name__
    if isinstance(exc, stripe.CardError):
        return PspDeclinedError(f"{operation}: card declined ({code})", exc.code)
    if exc.http_status == 404:
        return PspNotFoundError(f"{operation}: no such object at the PSP")
    status = f"HTTP {exc.http_status}" if exc.http_status else "no answer"
    refused = exc.http_status is not None and 400 <= exc.http_status < 500
    return PspError(
        f"{operation} failed at the PSP ({status}, {code})",
        definitive=refused and exc.http_status not in {409, 429},
    )


class StripePsp:
    """Stripe's PaymentIntents, refunds, payouts and balance transactions, for one runtime."""

    def __init__(self, client: stripe.StripeClient, http_client: stripe.HTTPClient) -> None:
        self._client = client
        self._http_client = http_client

    async def aclose(self) -> None:
        """Close the connections to the PSP."""
        await self._http_client.close_async()  # type: ignore[no-untyped-call]

    @classmethod
    def from_kms(
        cls,
        kms: Kms,
        *,
        api_base: str | None = None,
        max_network_retries: int = DEFAULT_NETWORK_RETRIES,
        timeout: float = 30.0,
    ) -> StripePsp:
        """The adapter with the API key from the KMS; `api_base` points it at the sandbox."""
        secret = kms.read_secret(API_KEY_SECRET)
        if secret is None:
            raise PspError(f"the KMS holds no PSP API key ({API_KEY_SECRET})")
        return cls.connect(
            secret,
            api_base=api_base,
            max_network_retries=max_network_retries,
            timeout=timeout,
        )

    @classmethod
    def connect(
        cls,
        api_key: SecretStr,
        *,
        api_base: str | None = None,
        max_network_retries: int = DEFAULT_NETWORK_RETRIES,
        timeout: float = 30.0,
    ) -> StripePsp:
        """The adapter with this API key (`from_kms` is how the runtime gets one)."""
        http_client = _HttpxClient(timeout=timeout)
        client = stripe.StripeClient(
            api_key.get_secret_value(),
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=http_client,
        )
        return cls(client, http_client)

    async def create_payment_intent(
        self,
        tenant_id: uuid.UUID,
        *,
        amount: int,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str] | None = None,
        payment_method: str | None = None,
        confirm: bool = False,
    ) -> PaymentIntent:
        """A PaymentIntent owned by `tenant_id`; `idempotency_key` is the caller's key (the
        one sent is derived from it)."""
        _check_money(amount, currency)
        tags = dict(metadata or {})
        tags[TENANT_METADATA_KEY] = str(tenant_id)  # last: a caller cannot name another tenant
        # Cards only: the payer's page has the PSP's card fields and nothing else (SAQ A), and
        # an intent confirmed from the server needs no redirect (no `return_url`).
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "metadata": tags,
            "payment_method_types": ["card"],
        }
        if payment_method is not None:
            params["payment_method"] = payment_method
            params["confirm"] = confirm
        operation = "create payment intent"
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params=params,  # type: ignore[arg-type]
                options=_keyed(tenant_id, "payment_intent.create", idempotency_key),
            )
        except stripe.StripeError as exc:
            raise _error(operation, exc) from None
        return self._intent(intent, tenant_id)

    async def confirm_payment_intent(
        self, tenant_id: uuid.UUID, payment_intent_id: str, *, idempotency_key: str
    ) -> PaymentIntent:
        """Confirm an intent of `tenant_id`'s with the payment method it already has (the
        sandbox does not implement confirming with a new one)."""
        await self.retrieve_payment_intent(tenant_id, payment_intent_id)  # its owner only
        try:
            intent = await self._client.v1.payment_intents.confirm_async(
                payment_intent_id,
                options=_keyed(tenant_id, "payment_intent.confirm", idempotency_key),
            )
        except stripe.StripeError as exc:
            raise _error("confirm payment intent", exc) from None
        return self._intent(intent, tenant_id)

    async def set_payment_method(
        self,
        tenant_id: uuid.UUID,
        payment_intent_id: str,
        payment_method_id: str,
        *,
        idempotency_key: str,
    ) -> PaymentIntent:
        """Give an intent of `tenant_id`'s the payment method to confirm it with (then
        `confirm_payment_intent`: the sandbox does not implement confirming with a new one)."""
        await self.retrieve_payment_intent(tenant_id, payment_intent_id)  # its owner only
        try:
            intent = await self._client.v1.payment_intents.update_async(
                payment_intent_id,
                params={"payment_method": payment_method_id},
                options=_keyed(tenant_id, "payment_intent.update", idempotency_key),
            )
        except stripe.StripeError as exc:
            raise _error("set payment method", exc) from None
        return self._intent(intent, tenant_id)

    async def retrieve_payment_method(self, payment_method_id: str) -> PaymentMethod:
        """A payment method as the PSP has it: its type and card fingerprint, nothing more.
        It belongs to no tenant yet (the payer's browser made it with the publishable key)."""
        try:
            method = await self._client.v1.payment_methods.retrieve_async(payment_method_id)
        except stripe.StripeError as exc:
            raise _error("retrieve payment method", exc) from None
        card = getattr(method, "card", None)
        if card is not None:
            fingerprint = getattr(card, "fingerprint", None)
        else:
            # A Card (`card_…`: Stripe answers it as a PaymentMethod, the sandbox as the Card
            # itself) carries its fingerprint at the top.
            is_card = getattr(method, "object", None) == "card"
            fingerprint = getattr(method, "fingerprint", None) if is_card else None
        return PaymentMethod(
            id=method.id,
            type=str(method.type),
            card_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        )

    async def retrieve_payment_intent(
        self, tenant_id: uuid.UUID, payment_intent_id: str
    ) -> PaymentIntent:
        """The intent as the PSP has it now (the proof of payment a webhook is not)."""
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(payment_intent_id)
        except stripe.StripeError as exc:
            raise _error("retrieve payment intent", exc) from None
        return self._intent(intent, tenant_id)

    async def create_refund(
        self,
        tenant_id: uuid.UUID,
        payment_intent_id: str,
        *,
        amount: int,
        idempotency_key: str,
    ) -> Refund:
        """Refund `amount` minor units of one of `tenant_id`'s intents."""
        intent = await self.retrieve_payment_intent(tenant_id, payment_intent_id)
        _check_money(amount, intent.currency)
        try:
            refund = await self._client.v1.refunds.create_async(
                params={
                    "payment_intent": payment_intent_id,
                    "amount": amount,
                    "metadata": {TENANT_METADATA_KEY: str(tenant_id)},
                },
                options=_keyed(tenant_id, "refund.create", idempotency_key),
            )
        except stripe.StripeError as exc:
            raise _error("create refund", exc) from None
        return Refund(
            id=refund.id,
            status=str(refund.status),
            amount=refund.amount,
            currency=intent.currency,
            payment_intent=payment_intent_id,
        )

    async def create_payout(
        self,
        tenant_id: uuid.UUID,
        *,
        amount: int,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Payout:
        """Pay `amount` minor units out of the PSP balance for `tenant_id` (tagged like every
        object the runtime makes); `idempotency_key` is the caller's key (the one sent is
        derived from it).

        The sandbox (localstripe 1.15) accepts payouts in `eur` only, never checks the
        balance (Stripe refuses a payout above the available balance: `balance_insufficient`)
        and makes no balance transaction for them (reconciliation sees none); nor does it
        honour idempotency keys: the caller's own record is what keeps a payout single."""
        _check_money(amount, currency)
        tags = dict(metadata or {})
        tags[TENANT_METADATA_KEY] = str(tenant_id)  # last: a caller cannot name another tenant
        try:
            payout = await self._client.v1.payouts.create_async(
                params={"amount": amount, "currency": currency, "metadata": tags},
                options=_keyed(tenant_id, "payout.create", idempotency_key),
            )
        except stripe.StripeError as exc:
            raise _error("create payout", exc) from None
        return Payout(
            id=payout.id,
            status=str(payout.status),
            amount=payout.amount,
            currency=payout.currency,
        )

    async def retrieve_charge(self, intent: PaymentIntent) -> Charge:
        """The latest charge of `intent` (one of the caller's, as `retrieve_payment_intent`
        returned it), with its balance transaction. The charge must name that intent: it is
        the intent's tenant tag that makes it the caller's."""
        if intent.latest_charge is None:
            raise PspNotFoundError("the payment intent has no charge at the PSP")
        try:
            charge = await self._client.v1.charges.retrieve_async(
                intent.latest_charge, params={"expand": ["balance_transaction"]}
            )
        except stripe.StripeError as exc:
            raise _error("retrieve charge", exc) from None
        if _id_of(getattr(charge, "payment_intent", None)) != intent.id:
            raise PspNotFoundError("no such charge at the PSP")
        booked = getattr(charge, "balance_transaction", None)
        return Charge(
            id=charge.id,
            status=str(charge.status),
            amount=charge.amount,
            currency=charge.currency,
            payment_intent=intent.id,
            balance_transaction=_balance_transaction(booked)
            if booked is not None and not isinstance(booked, str)
            else None,
        )

    async def retrieve_refund(self, tenant_id: uuid.UUID, refund_id: str) -> Refund:
        """One of `tenant_id`'s refunds as the PSP has it now."""
        try:
            refund = await self._client.v1.refunds.retrieve_async(refund_id)
        except stripe.StripeError as exc:
            raise _error("retrieve refund", exc) from None
        metadata = _metadata(refund)
        if _tenant_of(metadata) != tenant_id:
            raise PspNotFoundError("no such refund at the PSP")
        return Refund(
            id=refund.id,
            status=str(refund.status),
            amount=refund.amount,
            currency=refund.currency,
            payment_intent=_id_of(getattr(refund, "payment_intent", None)),
        )

    async def retrieve_payout(self, tenant_id: uuid.UUID, payout_id: str) -> Payout:
        """One of `tenant_id`'s payouts (tagged with its tenant when created) as the PSP has
        it now."""
        try:
            payout = await self._client.v1.payouts.retrieve_async(payout_id)
        except stripe.StripeError as exc:
            raise _error("retrieve payout", exc) from None
        metadata = _metadata(payout)
        if _tenant_of(metadata) != tenant_id:
            raise PspNotFoundError("no such payout at the PSP")
        return Payout(
            id=payout.id, status=str(payout.status), amount=payout.amount, currency=payout.currency
        )

    async def balance_transactions(
        self,
        *,
        created_from: int | None = None,
        created_until: int | None = None,
        sources: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[BalanceTransaction]:
        """The account's balance transactions created in [`created_from`, `created_until`)
        (Unix seconds), every page of them: the PSP's side of reconciliation. With `sources`,
        each comes with its source (charge, refund, payout), in the same pages (`expand`);
        `progress` is told how many were read.

        The window is applied here, not sent as `created[gte]`/`created[lt]`: the sandbox
        refuses those parameters. Both Stripe and the sandbox list newest first, so paging
        stops at the first transaction older than the window instead of reading all history.
        """
        found: list[BalanceTransaction] = []
        params: dict[str, Any] = {"limit": 100}
        if sources:
            params["expand"] = ["data.source"]
        read = 0
        try:
            page = await self._client.v1.balance_transactions.list_async(params=params)  # type: ignore[arg-type]
            async for item in page.auto_paging_iter():
                read += 1
                if progress is not None:
                    progress(read)
                if created_from is not None and item.created < created_from:
                    break
                if created_until is not None and item.created >= created_until:
                    continue
                found.append(_balance_transaction(item, sources))
        except stripe.StripeError as exc:
            raise _error("list balance transactions", exc) from None
        return found

    # Reconciliation's reads: account-wide (no tenant check), for the operator's report only.

    async def retrieve_balance_transaction(self, transaction_id: str) -> BalanceTransaction | None:
        """One balance transaction (a fee's), or None when the PSP has no such one."""
        try:
            item = await self._client.v1.balance_transactions.retrieve_async(transaction_id)
        except stripe.StripeError as exc:
            if exc.http_status == 404:
                return None
            raise _error("retrieve balance transaction", exc) from None
        return _balance_transaction(item, sources=False)

    async def retrieve_movement(self, psp_id: str) -> PspMovement | None:
        """The charge (`ch_`, `py_`), refund (`re_`) or payout (`po_`) `psp_id` as the PSP
        has it now, or None when it has none (or the id is of none of these)."""
        try:
            if psp_id.startswith(("ch_", "py_")):
                found: Any = await self._client.v1.charges.retrieve_async(
                    psp_id, params={"expand": ["payment_intent"]}
                )
            elif psp_id.startswith("re_"):
                found = await self._client.v1.refunds.retrieve_async(psp_id)
            elif psp_id.startswith("po_"):
                found = await self._client.v1.payouts.retrieve_async(psp_id)
            else:
                return None
        except stripe.StripeError as exc:
            if exc.http_status == 404:
                return None
            raise _error("retrieve a charge, refund or payout", exc) from None
        return _movement(found)

    async def payouts(
        self,
        *,
        created_from: int | None = None,
        created_until: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[PspMovement]:
        """The payouts created in [`created_from`, `created_until`), every page of them.

        Stripe lists payouts newest first (and also as `payout` balance transactions); the
        sandbox lists them in creation order and has no balance transaction for them. Paging
        stops at a payout older than the window only when it follows a newer one (the list is
        newest first), so either order is read whole where it must be.
        """
        found: list[PspMovement] = []
        previous: int | None = None
        read = 0
        try:
            page = await self._client.v1.payouts.list_async(params={"limit": 100})
            async for item in page.auto_paging_iter():
                read += 1
                if progress is not None:
                    progress(read)
                created = int(item.created)
                newest_first = previous is not None and previous > created
                previous = created
                if created_from is not None and created < created_from:
                    if newest_first:
                        break
                    continue
                if created_until is not None and created >= created_until:
                    continue
                movement = _movement(item)
                if movement is not None:
                    found.append(movement)
        except stripe.StripeError as exc:
            raise _error("list payouts", exc) from None
        return found

    @staticmethod
    def _intent(intent: stripe.PaymentIntent, tenant_id: uuid.UUID) -> PaymentIntent:
        metadata = _metadata(intent)
        if _tenant_of(metadata) != tenant_id:
            raise PspNotFoundError("no such payment intent at the PSP")
        return PaymentIntent(
            id=intent.id,
            status=str(intent.status),
            amount=intent.amount,
            currency=intent.currency,
            client_secret=intent.client_secret,
            tenant_id=tenant_id,
            metadata=metadata,
            latest_charge=_id_of(getattr(intent, "latest_charge", None)),
        )


class _HttpxClient(stripe.HTTPXClient):
    """stripe's httpx transport, sending the form body it has already encoded as `content`.

    stripe passes the encoded body as `data=`, which httpx deprecates for raw text (and a later
    httpx refuses); the bytes on the wire are the same.
    """

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> list[Any]:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        body = kwargs.pop("data")
        if body:
            kwargs["content"] = body
        return [args, kwargs]


def _balance_transaction(item: Any, sources: bool = False) -> BalanceTransaction:
    source = getattr(item, "source", None)
    return BalanceTransaction(
        id=item.id,
        type=str(item.type),
        amount=item.amount,
        fee=item.fee,
        # The sandbox sends no `net`; Stripe defines it as amount minus fee.
        net=getattr(item, "net", item.amount - item.fee),
        currency=item.currency,
        source=_id_of(source),
        status=str(item.status),
        created=item.created,
        source_object=_movement(source) if sources else None,
    )


def _movement(found: Any) -> PspMovement | None:
    """A charge, refund or payout object as reconciliation reads it (None for an id only)."""
    if found is None or isinstance(found, str):
        return None
    tenant = _tenant_of(_metadata(found))
    intent = getattr(found, "payment_intent", None)
    intent_status = None
    if intent is not None and not isinstance(intent, str):
        intent_status = str(getattr(intent, "status", None) or "") or None
        tenant = tenant or _tenant_of(_metadata(intent))
    return PspMovement(
        id=str(found.id),
        object=str(getattr(found, "object", "") or ""),
        amount=abs(int(getattr(found, "amount", 0) or 0)),
        currency=str(getattr(found, "currency", "") or ""),
        status=str(getattr(found, "status", "") or ""),
        created=int(getattr(found, "created", 0) or 0),
        tenant_id=tenant,
        payment_intent=_id_of(intent),
        payment_intent_status=intent_status,
        balance_transaction=_id_of(getattr(found, "balance_transaction", None)),
    )


def _metadata(found: Any) -> dict[str, str]:
    metadata = getattr(found, "metadata", None)
    if metadata is None or isinstance(metadata, str):
        return {}
    values = metadata.to_dict() if hasattr(metadata, "to_dict") else dict(metadata)
    return {str(key): str(value) for key, value in values.items()}


def _id_of(value: object) -> str | None:
    """An expandable field's id, whether the PSP sent the id or the object."""
    if value is None or isinstance(value, str):
        return value
    found = getattr(value, "id", None)
    return found if isinstance(found, str) else None
