"""Live check of red-teaming (AI-4): a red-team sample and the approval of high-risk actions."""

from __future__ import annotations
