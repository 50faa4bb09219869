#!/usr/bin/env bash
# Vendor the front-end libraries served from static/ (no CDN at run time, [UI-5]).
# Re-run to upgrade: it fetches the pinned versions from the npm registry and copies the built
# files plus their licences into static/vendor/. Commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
LWC_VERSION="${LWC_VERSION:-5.2.1}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent "lightweight-charts@${LWC_VERSION}" >/dev/null && tar xzf lightweight-charts-*.tgz )
mkdir -p static/vendor/lightweight-charts
cp "$tmp/package/dist/lightweight-charts.standalone.production.js" static/vendor/lightweight-charts/
cp "$tmp/package/LICENSE" static/vendor/lightweight-charts/LICENSE
echo "lightweight-charts ${LWC_VERSION} (TradingView, Apache-2.0) from the npm registry" > static/vendor/lightweight-charts/VERSION
echo "vendored lightweight-charts ${LWC_VERSION}"
