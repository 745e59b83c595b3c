# sealrelay: `make test` is the whole suite, on a fresh machine.
#
#   make test           deps + Vault test server + vet + every Go test (real Vault, swaks, Postfix)
#   make test-fuzz      each fuzz target for FUZZTIME
#   make test-crash     the long crash loop (CRASH_N messages)
#   make test-interop   Postfix as client and as upstream
#   make bench          the throughput benchmark against Postfix
#   make lint           gofmt, go vet, staticcheck

GO        ?= go
FUZZTIME  ?= 30s
CRASH_N   ?= 10000
CACHE_DIR ?= $(or $(SEALRELAY_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/sealrelay)
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@2025.1.1

export SEALRELAY_CACHE := $(CACHE_DIR)

.PHONY: test deps vault vet lint test-fuzz test-crash test-interop bench

test: deps vault vet
	$(GO) test -count=1 -timeout 45m ./...

deps:
	./tools/deps.sh

vault:
	@./tools/vault/build.sh >/dev/null

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	$(GO) vet ./...

lint: vet
	$(GO) run $(STATICCHECK) ./...
