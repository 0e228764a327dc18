# embervm: `make demo` runs code in a sandbox, `make test` runs every test.
# Both install what they need on a fresh Debian 12 machine (apt packages, the
# guest kernel and image, cached in $EMBERVM_CACHE_DIR, default ~/.cache/embervm).

SHELL := /bin/bash
KVM_HOST := tests/kvm-host/run

.PHONY: all deps guest testhost demo test lint build-tests clean-cache

all: guest

deps:
	@scripts/install-deps.sh

guest: deps
	@guest/build.sh

# The test host's kernel (only used where there is no hardware KVM).
testhost: deps
	@guest/kernel/build.sh testhost >/dev/null

demo: guest testhost
	@cargo build --release --locked -q -p embervm-cli
	@$(KVM_HOST) scripts/demo.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

build-tests:
	cargo test --workspace --locked --no-run

test: guest testhost lint build-tests
	$(KVM_HOST) tests/run-all.sh

clean-cache:
	rm -rf "$${EMBERVM_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/embervm}"
