"""Authorization as code (controls AZ-1, AZ-2): the runtime's Cedar schema and policies beside
this file, their composition with each app's (`compose`), the engine that loads them once, the
decision matrices and their reviewed snapshots, and the one enforcement point,
`services.Authorizer.authorize`."""
