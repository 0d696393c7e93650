"""The tabletop scenario, red-team runner and conformance report (EX-2, AI-4). Lands with its
issue."""
