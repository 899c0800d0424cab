#!/usr/bin/env bash
# install-envtest.sh makes the binaries that controller-runtime's envtest runs (kube-apiserver, etcd)
# available for the Kubernetes tests (internal/kubetest). It caches them OUTSIDE the repo, in
#   ${FLOWLENS_ENVTEST_DIR:-/var/cache/flowlens/envtest/<kubernetes version>}
# and skips whatever is already there, so it is idempotent and cheap to run before every `make test`.
#
# kube-apiserver: built from the k8s.io/kubernetes module (the Go module proxy serves it; nothing
#   prebuilt is downloaded). k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
#   them with ./staging/src paths, which a dependent module cannot use, so a throwaway module under
#   the cache pins every staging module to the matching v0.x.y release with replace directives read
#   from kubernetes' own go.mod. The repo's go.mod is never read nor touched. The first build took 24 minutes on this
#   2-core VM while it was busy with other builds (16 CPU-minutes); with warm Go caches 15 s.
# etcd: Debian's etcd-server when kube-apiserver accepts its version (checked below by starting both);
#   otherwise built from go.etcd.io/etcd/server/v3 at the version kubernetes' go.mod names (and always
#   with FLOWLENS_ENVTEST_ETCD=build, e.g. on a machine without apt). kube-apiserver v1.37.2 does accept
#   bookworm's etcd 3.4.23: the envtest tests pass on it.
#
# The version must match internal/kubetest's default directory (kubetest.KubeVersion).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

kube_version="v1.37.2"
staging_version="v0.${kube_version#v1.}" # v1.37.2 -> v0.37.2: staging modules are tagged in step
dir="${FLOWLENS_ENVTEST_DIR:-/var/cache/flowlens/envtest/$kube_version}"
build="$dir/.build" # throwaway module; kept so a rerun after a failure reuses the downloads
log() { echo "install-envtest: $*"; }

# The build must not depend on the caller's Go settings: no workspace, module mode, this machine's
# toolchain, no cgo (kube-apiserver and etcd are built CGO_ENABLED=0 upstream too).
export GOWORK=off GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$dir"

# quiet CMD...: runs CMD, showing its output ("go: downloading" lines) only when it fails.
quiet() {
  local out
  if ! out="$("$@" 2>&1)"; then
    echo "$out" >&2
    log "failed: $*" >&2
    exit 1
  fi
}

# new_module DIR: an empty throwaway module in DIR.
new_module() {
  mkdir -p "$1"
  (cd "$1" && rm -f go.mod go.sum && go mod init flowlens.invalid/envtest-build >/dev/null 2>&1)
}

# kube_gomod: the path of k8s.io/kubernetes' go.mod in the module cache, downloaded if need be. Run
# inside a throwaway module.
kube_gomod() {
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$kube_version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
  [ -f "$gomod" ] || { log "cannot download k8s.io/kubernetes@$kube_version" >&2; exit 1; }
  echo "$gomod"
}

build_kube_apiserver() {
  local m="$build/kube-apiserver" start end gomod
  start=$(date +%s)
  new_module "$m"
  cd "$m"
  gomod="$(kube_gomod)"
  # Every "k8s.io/x => ./staging/src/k8s.io/x" of kubernetes' go.mod becomes "k8s.io/x => k8s.io/x v0.y.z".
  local n=0
  while read -r mod; do
    go mod edit -replace "$mod=$mod@$staging_version"
    n=$((n + 1))
  done < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\1#p' "$gomod")
  [ "$n" -gt 0 ] || { log "no staging replace directives found in $gomod" >&2; exit 1; }
  log "pinned $n staging modules to $staging_version"
  quiet go get "k8s.io/kubernetes@$kube_version"
  # The version variables the release build stamps; without them the binary calls itself v0.0.0-master.
  local ld="" major="${kube_version#v}" minor
  minor="${major#*.}"; minor="${minor%%.*}"; major="${major%%.*}"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go build -trimpath -ldflags "-s -w$ld" -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$dir/kube-apiserver.tmp" "$dir/kube-apiserver"
  end=$(date +%s)
  log "built $dir/kube-apiserver ($("$dir/kube-apiserver" --version)) in $((end - start)) s"
}

# etcd_version_required: the etcd server version kubernetes' go.mod builds against (e.g. v3.7.0). Run
# inside a throwaway module.
etcd_version_required() {
  sed -n 's#^[[:space:]]*go\.etcd\.io/etcd/server/v3 \(v[^[:space:]]*\).*#\1#p' "$(kube_gomod)" | head -1
}

# apiserver_accepts_etcd BIN: start etcd BIN and kube-apiserver on loopback ports and wait for the
# apiserver's /readyz (its etcd checks included) and a list; it never gets there when the etcd is too
# old for it.
apiserver_accepts_etcd() {
  local etcd_bin="$1" tmp ok=1 epid apid
  tmp="$(mktemp -d)"
  local cport=$((20000 + RANDOM % 20000)) pport sport
  pport=$((cport + 1)); sport=$((cport + 2))
  "$etcd_bin" --data-dir "$tmp/etcd" --listen-client-urls "http://127.0.0.1:$cport" \
    --advertise-client-urls "http://127.0.0.1:$cport" --listen-peer-urls "http://127.0.0.1:$pport" \
    >"$tmp/etcd.log" 2>&1 &
  epid=$!
  openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=sa -keyout "$tmp/sa.key" -out "$tmp/sa.crt" \
    -days 1 >/dev/null 2>&1
  # Anonymous requests are refused (401) even on /readyz: a static admin token instead.
  echo "check-token,admin,1,system:masters" >"$tmp/tokens.csv"
  "$dir/kube-apiserver" --etcd-servers "http://127.0.0.1:$cport" --bind-address 127.0.0.1 \
    --secure-port "$sport" --cert-dir "$tmp/certs" --service-cluster-ip-range 10.0.0.0/24 \
    --service-account-issuer https://localhost --service-account-key-file "$tmp/sa.crt" \
    --service-account-signing-key-file "$tmp/sa.key" --authorization-mode AlwaysAllow \
    --token-auth-file "$tmp/tokens.csv" >"$tmp/apiserver.log" 2>&1 &
  apid=$!
  local api=(curl -skf -H "Authorization: Bearer check-token")
  for _ in $(seq 1 240); do # up to 2 minutes: the machine may be busy
    kill -0 "$apid" 2>/dev/null || break
    if "${api[@]}" "https://127.0.0.1:$sport/readyz" >/dev/null 2>&1 &&
      "${api[@]}" "https://127.0.0.1:$sport/api/v1/namespaces/default" >/dev/null 2>&1; then
      ok=0
      break
    fi
    sleep 0.5
  done
  if [ "$ok" -ne 0 ]; then
    log "kube-apiserver did not become ready with $etcd_bin ($("$etcd_bin" --version 2>/dev/null | head -1)); its log ends with:"
    tail -5 "$tmp/apiserver.log" | sed 's/^/    /'
  fi
  # The apiserver first, while its etcd is still there: without it, it hangs on SIGTERM.
  stop "$apid"
  stop "$epid"
  rm -rf "$tmp"
  return "$ok"
}

# stop PID: SIGTERM, then SIGKILL after 30 s.
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 60); do
    kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
    sleep 0.5
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

build_etcd() {
  local v m="$build/etcd" start end
  start=$(date +%s)
  new_module "$m"
  cd "$m"
  v="$(etcd_version_required)"
  [ -n "$v" ] || { log "cannot tell which etcd version k8s.io/kubernetes@$kube_version needs" >&2; exit 1; }
  quiet go get "go.etcd.io/etcd/server/v3@$v"
  go build -trimpath -ldflags "-s -w" -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$dir/etcd.tmp" "$dir/etcd"
  end=$(date +%s)
  log "built $dir/etcd from go.etcd.io/etcd/server/v3@$v in $((end - start)) s"
}

install_debian_etcd() {
  if [ ! -x /usr/bin/etcd ] || ! command -v curl >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || { log "need root to apt-get install etcd-server" >&2; return 1; }
    log "apt-get install etcd-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # curl and openssl for apiserver_accepts_etcd.
    apt-get install -y -qq --no-install-recommends etcd-server curl openssl >/dev/null
    # The package enables and starts a system etcd on the default ports; envtest starts its own.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now etcd >/dev/null 2>&1 || true; fi
  fi
  [ -x /usr/bin/etcd ]
}

if [ -x "$dir/kube-apiserver" ]; then
  log "$dir/kube-apiserver already there ($("$dir/kube-apiserver" --version))"
else
  build_kube_apiserver
fi

if [ -x "$dir/etcd" ]; then
  log "$dir/etcd already there ($("$dir/etcd" --version 2>/dev/null | head -1))"
else
  if [ "${FLOWLENS_ENVTEST_ETCD:-debian}" = build ]; then
    build_etcd
  elif install_debian_etcd && apiserver_accepts_etcd /usr/bin/etcd; then
    ln -sf /usr/bin/etcd "$dir/etcd"
    log "linked Debian's etcd ($(/usr/bin/etcd --version | head -1)) into $dir"
  else
    log "Debian's etcd is not usable with kube-apiserver $kube_version; building etcd from source"
    build_etcd
  fi
fi
log "envtest binaries in $dir"
