#!/usr/bin/env bash
# The whole test suite: installs what the tests need, builds everything, runs lints, Rust tests
# and the integration tests against the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== python test dependencies"
python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== build"
cargo build --workspace --bins

echo "== rust tests"
cargo test --workspace

echo "== integration tests"
python3 -m pytest tests -q
