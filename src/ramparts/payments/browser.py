"""What the payer's browser loads from the PSP (PAY-1, SAQ A): Stripe.js, and the origins the
payment page's Content-Security-Policy must allow for it.

Card details are typed into the PSP's own fields (Stripe.js's card element) and sent by it to
the PSP only; the payment page is the one page whose CSP names the PSP, and it names exactly
what Stripe.js needs, taken from the settings (`RAMPARTS_PSP_API_BASE`), never from a request:

- Stripe (no API base): its documented sources, `https://js.stripe.com` (and its
  subdomains) for the script and its frames, `https://hooks.stripe.com` for 3D Secure
  frames, `https://api.stripe.com` for its calls;
- the sandbox (localstripe at the API base): that one origin for all three; it serves its
  Stripe.js at `{api_base}/js.stripe.com/v3/` and draws its fields in the page itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["STRIPE_JS", "PspPageSources", "psp_page_sources", "stripe_js_url"]

#: Stripe.js, from Stripe (it must be loaded from there, never bundled or self-hosted).
STRIPE_JS = "https://js.stripe.com/v3/"
#: Where localstripe serves its stand-in for Stripe.js, under its API base.
SANDBOX_STRIPE_JS_PATH = "/js.stripe.com/v3/"

_STRIPE_SCRIPTS = ("https://js.stripe.com", "https://*.js.stripe.com")
_STRIPE_FRAMES = ("https://js.stripe.com", "https://*.js.stripe.com", "https://hooks.stripe.com")
_STRIPE_CONNECTIONS = ("https://api.stripe.com",)


@dataclass(frozen=True)
class PspPageSources:
    """The origins the payment page adds to its CSP: `script-src`, `frame-src`,
    `connect-src`."""

    scripts: tuple[str, ...]
    frames: tuple[str, ...]
    connections: tuple[str, ...]


def _origin(api_base: str) -> str:
    parts = urlsplit(api_base)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("the PSP's API base must be an http(s) URL")
    return f"{parts.scheme}://{parts.netloc}"


def stripe_js_url(api_base: str | None) -> str:
    """The Stripe.js the payment page loads: Stripe's, or the sandbox's at `api_base`."""
    if api_base is None:
        return STRIPE_JS
    return _origin(api_base) + SANDBOX_STRIPE_JS_PATH


def psp_page_sources(api_base: str | None) -> PspPageSources:
    """The payment page's extra CSP sources for the PSP at `api_base` (None: Stripe)."""
    if api_base is None:
        return PspPageSources(_STRIPE_SCRIPTS, _STRIPE_FRAMES, _STRIPE_CONNECTIONS)
    origin = _origin(api_base)
    return PspPageSources((origin,), (origin,), (origin,))
