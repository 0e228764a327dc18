#!/usr/bin/env bash
# run-all.sh: every test of the project, in one process tree, so that on a
# machine without hardware KVM the test host starts once for all of them
# (make test runs this through tests/kvm-host/run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --frozen
