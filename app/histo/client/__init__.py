"""The user's command line: `histo login`, `upload`, `jobs`, `get`, `verify` (a token file, never a
token on the command line)."""
