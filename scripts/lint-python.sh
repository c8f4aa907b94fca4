#!/usr/bin/env bash
# The Python half of `make lint` and `make check`: ruff and mypy from .venv (pinned in
# requirements-dev.lock; scripts/bootstrap.sh installs them), configured in pyproject.toml, over
# app/histo, tests, attack, bench and scripts, then scripts/mypy_ratchet.py (the override lists only
# shrink). Prints the findings, then one summary line; exits non-zero when anything is found.
#   HISTO_VENV=path   another virtualenv (as for bootstrap.sh)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
VENV=${HISTO_VENV:-.venv}
for tool in ruff mypy; do
  if [ ! -x "$VENV/bin/$tool" ]; then
    echo "lint-python: $VENV/bin/$tool is missing; run scripts/bootstrap.sh (make bootstrap)" >&2
    exit 2
  fi
done
PATHS=(app/histo tests attack bench scripts)

ruff_out=$("$VENV/bin/ruff" check --no-fix --output-format concise "${PATHS[@]}" 2>&1)
ruff_rc=$?
mypy_out=$("$VENV/bin/mypy" 2>&1)  # the same folders: `files` in pyproject.toml
mypy_rc=$?
ratchet_out=$("$VENV/bin/python" scripts/mypy_ratchet.py 2>&1)
ratchet_rc=$?

# Findings only: ruff's "All checks passed!" and mypy's "Success: ..." are left for the summary.
grep -vE '^(All checks passed!|Found [0-9]+ errors?\.|\[\*\] .*fixable.*)$' <<<"$ruff_out" | sed '/^$/d'
grep -vE '^(Success: no issues found|Found [0-9]+ errors? in )' <<<"$mypy_out"
[ "$ratchet_rc" -eq 0 ] || echo "$ratchet_out"

# "N finding(s)", or "did not run through (exit N)" for a tool that failed without findings
# (a bad configuration, a crash): that fails the run too.
verdict() {  # rc count noun
  if [ "$1" -eq 0 ]; then echo "clean"
  elif [ "$2" -gt 0 ]; then echo "$2 $3"
  else echo "did not run through (exit $1)"
  fi
}
ruff_v=$(verdict "$ruff_rc" "$(grep -cE '^[^ ].*:[0-9]+:[0-9]+: ' <<<"$ruff_out")" "finding(s)")
mypy_v=$(verdict "$mypy_rc" "$(grep -cE '^[^ ].*:[0-9]+: error: ' <<<"$mypy_out")" "error(s)")
ratchet_v=$(verdict "$ratchet_rc" "$(grep -c '^mypy ratchet: ' <<<"$ratchet_out")" "problem(s)")
files=$(find "${PATHS[@]}" -name '*.py' | wc -l)
if [ "$ruff_rc" -eq 0 ] && [ "$mypy_rc" -eq 0 ] && [ "$ratchet_rc" -eq 0 ]; then
  echo "lint-python: clean ($files files; ruff, mypy strict; ${ratchet_out#mypy ratchet: })"
  exit 0
fi
echo "lint-python: FAILED: ruff $ruff_v, mypy $mypy_v, ratchet $ratchet_v"
exit 1
