#!/usr/bin/env bash
# `sdxl serve` against the real A1111 client: builds the release binary (a no-op after
# `cargo test --release`), installs webuiapi==0.9.17 into a throwaway venv, and runs
# tests/server_webuiapi.py (which prints `N passed, N failed` and exits non-zero on a failure).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin sdxl
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check webuiapi==0.9.17
TMPDIR="$venv" "$venv/bin/python" tests/server_webuiapi.py --binary target/release/sdxl
