# HyperEnclave-TS: every target installs what it needs on a fresh Debian 12 machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

APT_PACKAGES := swtpm swtpm-tools tpm2-tools openssl zsh fish gcc binutils make systemd postgresql systemd-boot-efi pesign \
  bochs bochsbios vgabios grub-pc-bin grub-common xorriso mtools cpio busybox-static
CARGO := cargo
NPM := npm
STAMP := .tmp/stamps

.PHONY: help deps build build-ts build-rust test test-rust test-ts demo bench bench-verifier clean fuzz

help:
	@echo "make demo   - set up and run the whole flow on the emulated platform"
	@echo "make test   - set up and run every test (Rust + TypeScript)"
	@echo "make bench  - run the side-by-side benchmarks (writes bench/results/)"
	@echo "make fuzz   - the readers' fuzz tests with a fresh seed and many more inputs"
	@echo "make bench-verifier - the verifier load goal (5,000 agents every 10 s for 2 minutes)"

# System packages: installed with apt-get only when one is missing. The stamp depends on this
# Makefile, so a package added to APT_PACKAGES is checked for again on a machine that has a stamp.
$(STAMP)/apt: Makefile
	@mkdir -p $(STAMP)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

# `npm ci` refuses this lock file: the registry reachable here lacks the other platforms'
# builds of @napi-rs/lzma (optional, pulled in by @napi-rs/cli), so the lock cannot list them.
# `npm install --no-save` installs the locked versions and leaves package-lock.json untouched.
node_modules/.package-lock.json: package.json package-lock.json
	$(NPM) install --no-save --no-audit --no-fund --loglevel=error

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
	@mkdir -p .tmp
	npx vitest run --reporter=default --reporter=json --outputFile=.tmp/vitest.json
	node test/helpers/check-skips.mjs .tmp/vitest.json

# The system tier: Debian's kernel under QEMU TCG (SVM + NPT) with swtpm, demoted by our hypervisor.
# Exit 77 from run.sh means "cannot run here" and is reported as skipped with its reason;
# under CI (CI=true, set by .ci/run) a skipped system tier fails the run like a missing component.
# Then the UEFI mode (q35 + OVMF booting a unified kernel image, measured from power-on; run.sh --uefi).
SYSTEM_OR_SKIP = bash test/system/run.sh $(1); rc=$$?; \
	if [ $$rc = 77 ]; then \
	  if [ "$${CI:-}" = true ] || [ "$${CI:-}" = 1 ]; then echo "system tier $(1): skipped, and CI=$$CI requires it: FAILED (see SKIPPED line above)"; exit 1; fi; \
	  echo "system tier $(1): skipped (see SKIPPED line above)"; exit 0; \
	fi; exit $$rc
.PHONY: test-system test-system-or-skip test-system-uefi test-system-uefi-or-skip
test-system: deps build-ts
	bash test/system/run.sh
test-system-or-skip: deps build-ts
	@$(call SYSTEM_OR_SKIP,)
test-system-uefi: deps build-ts
	bash test/system/run.sh --uefi
test-system-uefi-or-skip: deps build-ts
	@$(call SYSTEM_OR_SKIP,--uefi)

# Then the systemd mode (a Debian root file system from mmdebstrap, cached under .tmp/system/debian,
# with systemd as PID 1 starting hyperenclave.service; run.sh --systemd, three boots).
.PHONY: test-system-systemd test-system-systemd-or-skip
test-system-systemd: deps build-ts
	bash test/system/run.sh --systemd
test-system-systemd-or-skip: deps build-ts
	@$(call SYSTEM_OR_SKIP,--systemd)

# The VMX tier: Debian's kernel under Bochs (Intel VMX + EPT), the intel-vmx image driven by hectl
# (test/system-vmx/run.sh, work files in .tmp/system-vmx). Exit 77 = cannot run here (Bochs, GRUB
# or xorriso not installable): a skip, reported with its reason; under CI (CI=true or 1) a skip
# fails the run like the system tier's.
.PHONY: test-system-vmx test-system-vmx-or-skip
test-system-vmx: deps build-ts
	bash test/system-vmx/run.sh
test-system-vmx-or-skip: deps build-ts
	@bash test/system-vmx/run.sh; rc=$$?; \
	if [ $$rc = 77 ]; then \
	  if [ "$${CI:-}" = true ] || [ "$${CI:-}" = 1 ]; then echo "VMX tier: skipped, and CI=$$CI requires it: FAILED (see SKIPPED line above)"; exit 1; fi; \
	  echo "VMX tier: skipped (see SKIPPED line above)"; exit 0; \
	fi; exit $$rc

test: test-rust test-ts test-system-or-skip test-system-uefi-or-skip test-system-systemd-or-skip test-system-vmx-or-skip

# The fuzz tests run in `make test` with a fixed seed; here with a fresh one (printed, so a failure
# replays with HE_FUZZ_SEED=<seed>) and FUZZ_ITERATIONS inputs per reader.
FUZZ_ITERATIONS ?= 50000
fuzz: build
	@seed=$${HE_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; echo "fuzz seed $$seed, $(FUZZ_ITERATIONS) inputs per reader"; \
	HE_FUZZ_SEED=$$seed HE_FUZZ_ITERATIONS=$(FUZZ_ITERATIONS) npx vitest run firmware-tools/elf.test.ts src/attest/readers.fuzz.test.ts --testTimeout=0

demo: build
	node dist/src/cli/main.js demo

bench: build
	node dist/bench/run.js
	node bench/readme-table.mjs

# The verifier's load goal: 5,000 agents every 10 s for 2 minutes, one instance (SQLite), one and
# two instances sharing a private PostgreSQL (loopback only). Writes bench/results/verifier-load.json.
.PHONY: bench-verifier
bench-verifier: build
	node dist/bench/verifier-load-goal.js

clean:
	rm -rf dist hypervisor/target .tmp

# Installs the CLI, the unit, the default config, completions (and the image when built) under DESTDIR.
PREFIX ?= /usr
LIBDIR := $(DESTDIR)$(PREFIX)/lib/hyperenclave
.PHONY: install
install: build
	install -d $(LIBDIR) $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/lib/systemd/system $(DESTDIR)/etc/hyperenclave \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d \
	  $(DESTDIR)$(PREFIX)/share/doc/hyperenclave $(DESTDIR)/lib/firmware/hyperenclave
	cp -r dist schemas package.json package-lock.json $(LIBDIR)/
	install -d $(LIBDIR)/hypervisor/addon
	install -m 0644 hypervisor/addon/hyperenclave-addon.node $(LIBDIR)/hypervisor/addon/
	if [ -d hypervisor/enclaves/out ]; then install -d $(LIBDIR)/hypervisor/enclaves && cp -r hypervisor/enclaves/out $(LIBDIR)/hypervisor/enclaves/; fi
	cd $(LIBDIR) && $(NPM) install --no-save --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
	# better-sqlite3's native binding, built by `make deps` (install scripts are not run above)
	cp -r node_modules/better-sqlite3/build $(LIBDIR)/node_modules/better-sqlite3/
	install -m 0755 systemd/hyperenclave-wrapper.sh $(DESTDIR)$(PREFIX)/bin/hyperenclave
	install -m 0644 systemd/hyperenclave.service systemd/hyperenclave-verifier.service systemd/hyperenclave-agent.service $(DESTDIR)/lib/systemd/system/
	[ -f $(DESTDIR)/etc/hyperenclave/config.json ] || install -m 0644 systemd/config.json $(DESTDIR)/etc/hyperenclave/config.json
	# the driver is loaded at boot by systemd-modules-load.service, with its parameters from modprobe.d
	install -d $(DESTDIR)$(PREFIX)/lib/modules-load.d $(DESTDIR)/etc/modprobe.d
	install -m 0644 systemd/modules-load.conf $(DESTDIR)$(PREFIX)/lib/modules-load.d/hyperenclave.conf
	[ -f $(DESTDIR)/etc/modprobe.d/hyperenclave.conf ] || install -m 0644 systemd/modprobe.conf $(DESTDIR)/etc/modprobe.d/hyperenclave.conf
	node dist/src/cli/main.js completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/hyperenclave
	node dist/src/cli/main.js completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_hyperenclave
	node dist/src/cli/main.js completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/hyperenclave.fish
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/hyperenclave/
	if [ -f .tmp/image/hyperenclave.img ]; then install -m 0644 .tmp/image/hyperenclave.img $(DESTDIR)/lib/firmware/hyperenclave/; fi
