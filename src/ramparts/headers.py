"""Internal HTTP headers that the app and the edge agree on; never sent to clients."""

__all__ = ["FORM_ACTION_HEADER", "PSP_PAGE_HEADER"]

#: A response may name extra origins its forms lead to (an OAuth client, after the login form
#: redirects there). The edge validates them, adds them to the CSP's form-action, and drops
#: the header.
FORM_ACTION_HEADER = "x-ramparts-form-action"
#: The payment page marks its response with this header (any value): the edge gives it the
#: CSP that also allows the PSP's Stripe.js, whose origins the edge holds from the settings
#: (the header names none), and drops the header.
PSP_PAGE_HEADER = "x-ramparts-psp-page"
