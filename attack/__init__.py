"""`make attack`: drills that try what an attacker would against histo, each printing what it tried, what
happened and whether the control held, and each posted as a `drill` SecOps event on the dashboard.

    python -m attack [--list] [--check-up] [--only NAME]... [--json FILE]   # the deployed cluster (make up)
    python -m attack.local [STATE_DIR]                                        # a local cluster (make local)

Run from the repository root (the package is not installed). Against the deployed cluster the drills
are grouped by where the attacker stands: network.py (the bridge), identity.py (stolen credentials),
lateral.py (a compromised worker), availability.py (flood, Vault sealed); cli.py runs them in order.
deployed.py is the handle of the deployed cluster that tests/deploy and tests/teardown use too; it and
this file need nothing beyond the standard library, so the deployment's virtualenv imports them."""
