#!/usr/bin/env bash
# Create ./.venv and install the project with its test extra; idempotent and quiet.
# Sourced by scripts/test and scripts/demo so each quick-start command works on a fresh clone.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log="$venv/install.log"
  echo "Setting up $venv (first run only; log in $log)..." >&2
  "$venv/bin/python" -m pip install --upgrade pip >"$log" 2>&1 || true
  if ! "$venv/bin/python" -m pip install -e "$root[test]" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "Installing the project failed; see $log" >&2
    exit 1
  fi
  rm -f "$venv"/.installed-* && touch "$stamp"
fi
