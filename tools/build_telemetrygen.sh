#!/usr/bin/env bash
# Build the Collector project's load generator, telemetrygen (.tools/telemetrygen), from its
# Go module at the contrib release the Collector is pinned to, so the e2e tests drive the
# bridge with a client nobody on this team wrote. Reused while the pin is unchanged.
set -euo pipefail

VERSION=v0.161.0

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools_dir=.tools
binary=$tools_dir/telemetrygen
stamp=$tools_dir/.telemetrygen-$VERSION

if [[ -x $binary && -f $stamp ]]; then
    echo "telemetrygen: $binary is up to date ($VERSION)"
    exit 0
fi
mkdir -p "$tools_dir"
echo "telemetrygen: building $binary $VERSION (a few minutes on 2 cores)"
start=$(date +%s)
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
GOBIN=$root/$tools_dir/.telemetrygen-bin go install \
    "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@$VERSION"
mv -f "$tools_dir/.telemetrygen-bin/telemetrygen" "$binary"
rmdir "$tools_dir/.telemetrygen-bin" 2>/dev/null || true
rm -f "$tools_dir"/.telemetrygen-v*
touch "$stamp"
echo "telemetrygen: built $binary in $(( $(date +%s) - start ))s"
