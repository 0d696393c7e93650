"""Identity: tenants, users, memberships and their roles, passwords.

The OIDC provider, MFA, tokens and service clients land here too (see DESIGN.md).
"""
