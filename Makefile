# HyperEnclave-TS: every target installs what it needs on a fresh Debian 12 machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

APT_PACKAGES := swtpm swtpm-tools tpm2-tools openssl zsh
CARGO := cargo
NPM := npm
STAMP := .tmp/stamps

.PHONY: help deps build build-ts build-rust test test-rust test-ts demo bench clean

help:
	@echo "make demo   - set up and run the whole flow on the emulated platform"
	@echo "make test   - set up and run every test (Rust + TypeScript)"
	@echo "make bench  - run the side-by-side benchmarks (writes bench/results/)"

# System packages: installed with apt-get only when one is missing.
$(STAMP)/apt:
	@mkdir -p $(STAMP)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	$(NPM) ci --no-audit --no-fund

deps: $(STAMP)/apt node_modules/.package-lock.json

build-rust: deps
	cd hypervisor && $(CARGO) build --release
	bash hypervisor/addon/build.sh

build-ts: deps
	$(NPM) run build

build: build-rust build-ts

test-rust: build-rust
	cd hypervisor && $(CARGO) test --release

test-ts: build
	npx vitest run

test: test-rust test-ts

demo: build
	node dist/src/cli/main.js demo

bench: build
	node dist/bench/run.js

clean:
	rm -rf dist hypervisor/target .tmp
