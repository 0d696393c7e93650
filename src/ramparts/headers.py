"""Internal HTTP headers that the app and the edge agree on; never sent to clients."""

__all__ = ["FORM_ACTION_HEADER"]

#: A response may name extra origins its forms lead to (an OAuth client, after the login form
#: redirects there). The edge validates them, adds them to the CSP's form-action, and drops
#: the header.
FORM_ACTION_HEADER = "x-ramparts-form-action"
