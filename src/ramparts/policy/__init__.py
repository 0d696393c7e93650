"""Authorization as code (controls AZ-1, AZ-2): the Cedar schema and policies beside this
file, the engine that loads them once, the decision matrix and its reviewed snapshot, and the
one enforcement point, `services.Authorizer.authorize`."""
