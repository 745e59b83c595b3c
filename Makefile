# sealrelay: `make test` is the whole suite, on a fresh machine.
#
#   make test           deps + Vault and Hydra test servers + vet + every Go test (real Vault, Hydra, swaks, Postfix, Dovecot)
#   make test-fuzz      each fuzz target for FUZZTIME
#   make test-crash     the long crash loop (CRASH_N messages)
#   make test-interop   Postfix as client and as upstream
#   make bench          the throughput benchmark against Postfix
#   make bench-sessions 1000 slow 1 MiB sessions: the agent's peak RSS and open files
#   make lint           gofmt, go vet, third_party/go-smtp check, staticcheck
#   make docs           regenerate docs/config.md, dist/man/*, dist/deb/sealrelay.toml, and the README's generated blocks
#   make deb            the Debian packages sealrelay and sealrelay-mta, into build/deb (DEB_VERSION to set the version)

GO        ?= go
FUZZTIME  ?= 30s
CRASH_N   ?= 10000
CACHE_DIR ?= $(or $(SEALRELAY_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/sealrelay)
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

export SEALRELAY_CACHE := $(CACHE_DIR)

.PHONY: test deps vault hydra vet lint docs deb test-fuzz test-crash test-interop bench bench-sessions

test: deps vault hydra vet
	$(GO) test -count=1 -timeout 45m ./...
	$(GO) -C third_party/go-smtp test -count=1 ./...

deps:
	./tools/deps.sh

vault:
	@./tools/vault/build.sh >/dev/null

hydra:
	@./tools/hydra/build.sh >/dev/null

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	$(GO) vet ./...
	./tools/third_party.sh -check

lint: vet
	$(GO) run $(STATICCHECK) ./...

# The config reference and the usage text are generated from the code
# (agent/config's struct tags and Default; the command table in
# cmd/sealrelay/usage.go); TestDocsUpToDate fails when a file differs.
docs:
	$(GO) test -count=1 -run '^TestDocsUpToDate$$' ./cmd/sealrelay -update

# The Debian packages, built with dpkg-deb from a staging tree (see
# dist/deb/build.sh; README.md, "The Debian package"). The suite builds,
# lints, installs, upgrades and purges them (dist/deb, as root).
DEB_VERSION ?=
DEB_DIR     ?= build/deb
deb:
	./dist/deb/build.sh $(if $(DEB_VERSION),-v $(DEB_VERSION)) -o $(DEB_DIR)

# Each fuzz target for FUZZTIME, one at a time (the fuzzer uses every core).
FUZZ_TARGETS = \
	./agent/config:FuzzParseConfig \
	./keys:FuzzParseRecipients \
	./secrets/agefile:FuzzParse \
	./agent/spool:FuzzReadEnvelope \
	./agent/spool:FuzzScanSegment \
	./agent/smtpd:FuzzSession \
	./agent/maildrop:FuzzParse

test-fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t##*:} in $${t%%:*} for $(FUZZTIME)"; \
		GO=$(GO) ./tools/fuzz.sh $${t%%:*} $${t##*:} $(FUZZTIME); \
	done

# The crash loop at full size: SIGKILL at random moments while CRASH_N
# messages are sent; lost must be 0. The figures go to CRASH_REPORT.
CRASH_REPORT ?= crash-report.txt
test-crash:
	SEALRELAY_CRASH_N=$(CRASH_N) SEALRELAY_CRASH_REPORT=$(abspath $(CRASH_REPORT)) \
		$(GO) test -count=1 -v -timeout 60m -run '^TestCrashLoop$$' ./cmd/sealrelay/

# Postfix as a client relaying into sealrelay, and as the upstream relay
# host with SASL AUTH (Cyrus sasldb) over STARTTLS. Also part of `make test`.
test-interop: deps
	$(GO) test -count=1 -timeout 15m ./internal/testing/peers/postfixtest/ ./internal/testing/interop/

# The throughput benchmark: Postfix, sealrelay and the upstream fed
# directly, 3 rounds, 8 workloads; prints a Markdown table.
BENCH_FLAGS ?=
bench: deps
	$(GO) run ./bench $(BENCH_FLAGS)

# Many slow senders: 1000 sessions at once, each sending 1 MiB over 15 s,
# to the built binary; prints the agent's peak RSS and open files.
SESSIONS_FLAGS ?=
bench-sessions:
	$(GO) run ./bench sessions $(SESSIONS_FLAGS)
