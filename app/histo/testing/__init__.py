"""Test harness shipped with the package (as kazoo ships kazoo.testing): clients of a running local
cluster and what an attacker holding a compromised service's files can do with them. Used by
tests/integration, the local attack drills (attack/local.py) and the benchmarks (bench/); nothing in
the services imports it."""
