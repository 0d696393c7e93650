"""The crypto tests' real OpenBao server (see `tests.crypto.bao`)."""

from tests.crypto.bao import bao

__all__ = ["bao"]
