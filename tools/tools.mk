# The real OpenTelemetry Collector, Jaeger v2 and the Collector project's telemetrygen used by the e2e tests and `make demo`,
# built from pinned Go modules into the git-ignored .tools/ folder and reused while
# their pins are unchanged (see tools/build_collector.sh and tools/build_jaeger.sh).
# Without Go the targets say so in one line and succeed: the e2e tests then skip.

HAVE_GO := $(shell command -v go 2>/dev/null)

ifeq ($(HAVE_GO),)
tools collector jaeger telemetrygen:
	@echo "$@: go is not on PATH, so the Collector and Jaeger are not built and the e2e tests will be skipped (install Go to run them)"
else
tools: collector jaeger telemetrygen

collector:
	@tools/build_collector.sh

jaeger:
	@tools/build_jaeger.sh

telemetrygen:
	@tools/build_telemetrygen.sh
endif
