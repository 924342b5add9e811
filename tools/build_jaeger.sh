#!/usr/bin/env bash
# Build Jaeger v2 all-in-one (.tools/jaeger) from its Go module at a pinned version.
#
# Jaeger's module path has no /v2, so each v2.x release is also tagged v1.(x+63):
# v1.76.0 is Jaeger v2.13.0, and its cmd/jaeger is the v2 binary (an OpenTelemetry
# Collector distribution configured by YAML; see collector-config/jaeger.yaml).
# `go install ...@v1.76.0` refuses the module because its go.mod has a replace
# directive, so this copies the module source out of the module cache and builds it
# as the main module, with exactly Jaeger's own go.mod and go.sum.
# Built from source, the UI assets are absent: port 16686 serves a placeholder page,
# while the query APIs (/api/v3/..., /api/...) work in full.
# Reused while the pin is unchanged (a stamp file named after it sits next to it).
set -euo pipefail

JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_VERSION=v1.76.0  # = Jaeger v2.13.0

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools_dir=.tools
binary=$tools_dir/jaeger
stamp=$tools_dir/.jaeger-$JAEGER_VERSION

if [[ -x $binary && -f $stamp ]]; then
    echo "jaeger: $binary is up to date ($JAEGER_VERSION)"
    exit 0
fi

mkdir -p "$tools_dir"
echo "jaeger: building $binary from $JAEGER_MODULE@$JAEGER_VERSION (several minutes on 2 cores)"
start=$(date +%s)
if ! info=$(go mod download -json "$JAEGER_MODULE@$JAEGER_VERSION"); then
    echo "jaeger: could not download $JAEGER_MODULE@$JAEGER_VERSION:" >&2
    echo "$info" >&2
    exit 1
fi
src_dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$info")
work=$tools_dir/jaeger-src
rm -rf "$work"
cp -r "$src_dir" "$work"
chmod -R u+w "$work"
(cd "$work" && go build -buildvcs=false -trimpath -ldflags "-s -w" -o "$root/$binary.tmp" ./cmd/jaeger)
mv -f "$binary.tmp" "$binary"
rm -rf "$work"
rm -f "$tools_dir"/.jaeger-*
touch "$stamp"
echo "jaeger: built $binary in $(( $(date +%s) - start ))s"
