"""Authorization as code: Cedar schema and policies, the single `authorize` enforcement point,
the decision matrix and policy diff (controls AZ-1, AZ-2). Lands with the authorization issue."""
