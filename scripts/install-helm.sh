#!/usr/bin/env bash
# Installs helm (the chart tests run `helm lint` and `helm template`) into $(go env GOPATH)/bin, built
# from its Go module through the module proxy, unless that exact version is already there. Idempotent.
set -euo pipefail
version=v3.22.0
bin="$(go env GOPATH)/bin"
# A go-installed helm does not stamp its version (`helm version` says v3.22): read the module's.
installed() { go version -m "$bin/helm" 2>/dev/null | awk '$1 == "mod" && $2 == "helm.sh/helm/v3" {print $3}'; }
if [ -x "$bin/helm" ] && [ "$(installed)" = "$version" ]; then
	echo "helm $version already installed at $bin/helm"
	exit 0
fi
echo "installing helm $version into $bin (go install helm.sh/helm/v3/cmd/helm@$version)"
GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$version"
echo "installed: helm $(installed) at $bin/helm"
