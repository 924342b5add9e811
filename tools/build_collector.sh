#!/usr/bin/env bash
# Build the membrane-otel Collector (.tools/otelcol-membrane) with the pinned
# OpenTelemetry Collector Builder from collector-config/builder-config.yaml.
#
# The result is reused while the manifest and the builder pin are unchanged: a stamp
# file named after their sha1 sits next to the binary. A changed manifest rebuilds.
# Needs only `go` on PATH; GOPATH and GOCACHE stay at Go's defaults so a rebuild
# reuses the module and build caches.
set -euo pipefail

BUILDER_VERSION=v0.161.0

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
manifest=collector-config/builder-config.yaml
tools_dir=.tools
binary=$tools_dir/otelcol-membrane
key=$( (echo "$BUILDER_VERSION"; cat "$manifest") | sha1sum | cut -c1-12)
stamp=$tools_dir/.otelcol-membrane-$key

if [[ -x $binary && -f $stamp ]]; then
    echo "collector: $binary is up to date (manifest $key)"
    exit 0
fi

mkdir -p "$tools_dir"
builder=$tools_dir/builder-$BUILDER_VERSION/builder
if [[ ! -x $builder ]]; then
    echo "collector: installing the Collector builder $BUILDER_VERSION"
    GOBIN=$root/$tools_dir/builder-$BUILDER_VERSION go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
fi

# The generated sources sit inside this git work tree; stamping VCS data into the binary
# would need a usable git there and buys nothing.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
echo "collector: building $binary from $manifest (several minutes on 2 cores)"
start=$(date +%s)
rm -rf "$tools_dir/otelcol-build"
"$builder" --config "$manifest"
# The builder writes into dist.output_path; keep only the binary at a stable name.
mv -f "$tools_dir/otelcol-build/otelcol-membrane" "$binary.tmp"
mv -f "$binary.tmp" "$binary"
rm -f "$tools_dir"/.otelcol-membrane-*
touch "$stamp"
echo "collector: built $binary in $(( $(date +%s) - start ))s"
