"""Serving a finished run: raw candidates (scorer) or ranking requests (ranking) scored in process,
the CTR-only model exported (scorer), and both behind a Ray Serve HTTP endpoint (endpoint, set up by
settings). Nothing is imported here, so the CLI reads the settings without torch or Ray."""
