#!/usr/bin/env bash
# Renders the Helm chart with its default values into flowlens.yaml, for `kubectl apply -f` installs.
# Run after changing the chart: deployments/helmtest fails while flowlens.yaml is stale.
set -euo pipefail
cd "$(dirname "$0")/../.."
helm=$(command -v helm || echo "$(go env GOPATH)/bin/helm")
[ -x "$helm" ] || { echo "helm not found: run scripts/install-helm.sh" >&2; exit 1; }
out=deployments/manifests/flowlens.yaml
{
	cat deployments/manifests/header.yaml
	"$helm" template flowlens deployments/helm/flowlens --namespace flowlens
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
