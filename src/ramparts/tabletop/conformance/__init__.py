"""`ramparts conformance`: one live check per control id against a running instance, each
PASS, FAIL or NOT-IMPLEMENTED with the evidence it saw."""
