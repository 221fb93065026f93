#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Python packages; the Cassandra jars via
# Maven), builds everything, starts a real Apache Cassandra, runs lints, the Rust tests and the
# integration tests against the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== python test dependencies"
python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== build"
cargo build --workspace --bins

echo "== cassandra (one real node for the Rust and integration tests)"
trap 'bash scripts/cassandra.sh stop' EXIT
cassandra_env=$(BEANS_CASSANDRA_OWNER_PID=$$ bash scripts/cassandra.sh start)
eval "$cassandra_env"
export CASSANDRA_NATIVE CASSANDRA_DIR

echo "== rust tests"
cargo test --workspace

echo "== integration tests"
python3 -m pytest tests -q
