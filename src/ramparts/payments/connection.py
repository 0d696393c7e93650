"""The PSP adapter one process uses, made when a money route first needs it.

Money routes and tools get it through `PspConnection` (in `AppServices.psp`), never by
building their own: one HTTP connection pool per process, the API key read from the KMS once,
and one precise refusal when payments are not set up (503 `payments-unavailable`) instead of a
server that will not start because one feature lacks its key.
"""

from __future__ import annotations

from ramparts.crypto.kms import Kms
from ramparts.payments.psp import API_KEY_SECRET, PspError, StripePsp
from ramparts.problems import Problem, ProblemType

__all__ = ["PspConnection"]


class PspConnection:
    """`psp()`: the adapter, pointed at `api_base` (the sandbox's; None: Stripe's own)."""

    def __init__(self, kms: Kms, *, api_base: str | None = None) -> None:
        self._kms = kms
        self._api_base = api_base
        self._psp: StripePsp | None = None

    @property
    def api_base(self) -> str | None:
        return self._api_base

    def __call__(self) -> StripePsp:
        if self._psp is None:
            try:
                self._psp = StripePsp.from_kms(self._kms, api_base=self._api_base)
            except PspError:
                raise Problem(
                    503,
                    ProblemType.PAYMENTS_UNAVAILABLE,
                    f"payments are not set up: the KMS holds no PSP API key ({API_KEY_SECRET})",
                ) from None
        return self._psp

    async def aclose(self) -> None:
        psp, self._psp = self._psp, None
        if psp is not None:
            await psp.aclose()
