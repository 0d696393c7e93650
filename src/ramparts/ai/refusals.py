"""The refusal the assistant's services answer with: an HTTP status and a problem type, which
the views turn into problem+json."""

from __future__ import annotations

from ramparts.problems import ProblemType

__all__ = ["GatewayRefusedError"]


class GatewayRefusedError(Exception):
    """The whole request is refused (kill-switch, secret in the message, no endpoint)."""

    def __init__(
        self, status: int, kind: ProblemType, detail: str, *, retry_after: int = 0
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail
        self.retry_after = retry_after
