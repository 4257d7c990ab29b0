#!/usr/bin/env bash
# Provides the envtest control-plane binaries (kube-apiserver, etcd, kubectl) without the
# usual envtest download bucket, which this environment cannot reach:
#   - kube-apiserver is built from the Go module proxy (k8s.io/kubernetes ${KUBE_VERSION});
#   - etcd comes from Debian's etcd-server package (installed if missing), or is built from
#     go.etcd.io/etcd/server/v3 when apt is not available;
#   - kubectl is taken from PATH or built from k8s.io/kubernetes as well.
# The binaries are cached outside the checkout, keyed by version, so a second run does not
# rebuild. KUBEBUILDER_ASSETS, when set and complete, wins and nothing is built.
# Prints the assets directory on stdout (everything else goes to stderr).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
STAGING_VERSION="v0${KUBE_VERSION#v1}"           # v1.36.3 -> v0.36.3
ETCD_GO_VERSION="${ETCD_GO_VERSION:-v3.5.21}"
CACHE_ROOT="${CALLBACK_ROUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/callback-router}"
# Bump RECIPE when the way the binaries are built changes, so caches are rebuilt.
RECIPE=2
ASSETS="${CACHE_ROOT}/envtest/${KUBE_VERSION}-r${RECIPE}"

log() { echo "envtest-assets: $*" >&2; }

complete() { [[ -x "$1/kube-apiserver" && -x "$1/etcd" && -x "$1/kubectl" ]]; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && complete "${KUBEBUILDER_ASSETS}"; then
  log "using KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
  echo "${KUBEBUILDER_ASSETS}"
  exit 0
fi

mkdir -p "${ASSETS}"
if complete "${ASSETS}"; then
  log "cached in ${ASSETS}"
  echo "${ASSETS}"
  exit 0
fi

# A throwaway module that requires k8s.io/kubernetes and maps each staging module
# (replaced by ./staging/... in kubernetes' own go.mod) to its published version.
build_kube() { # $1: package under k8s.io/kubernetes/cmd, $2: output
  local mod="${CACHE_ROOT}/envtest/build-${KUBE_VERSION}"
  mkdir -p "${mod}"
  if [[ ! -f "${mod}/go.sum" ]]; then
    log "preparing build module for k8s.io/kubernetes ${KUBE_VERSION}"
    local gomod
    gomod="$(cd "${mod}" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')"
    {
      echo "module callback-router.dev/envtest-build"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes ${KUBE_VERSION}"
      echo
      sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"${STAGING_VERSION}"'#p' "${gomod}"
    } > "${mod}/go.mod"
    echo 'package main' > "${mod}/tools.go"
    (cd "${mod}" && go mod tidy -e >/dev/null 2>&1 || true)
  fi
  log "building $1 from k8s.io/kubernetes ${KUBE_VERSION} (first run only; takes a few minutes)"
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION}"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  (cd "${mod}" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags="${ldflags}" -o "$2" "k8s.io/kubernetes/cmd/$1")
}

if [[ ! -x "${ASSETS}/kube-apiserver" ]]; then
  build_kube kube-apiserver "${ASSETS}/kube-apiserver.tmp"
  mv "${ASSETS}/kube-apiserver.tmp" "${ASSETS}/kube-apiserver"
fi

if [[ ! -x "${ASSETS}/etcd" ]]; then
  etcd_bin="$(command -v etcd || true)"
  if [[ -z "${etcd_bin}" && -x /usr/bin/apt-get && "$(id -u)" == 0 ]]; then
    log "installing Debian's etcd-server"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) >&2 || true
    # Debian starts the packaged service; tests run their own etcd.
    (systemctl disable --now etcd || service etcd stop) >/dev/null 2>&1 || true
    etcd_bin="$(command -v etcd || true)"
  fi
  if [[ -n "${etcd_bin}" ]]; then
    ln -sf "${etcd_bin}" "${ASSETS}/etcd"
  else
    log "building etcd ${ETCD_GO_VERSION} from Go modules"
    GOBIN="${ASSETS}" CGO_ENABLED=0 go install "go.etcd.io/etcd/server/v3@${ETCD_GO_VERSION}"
    mv "${ASSETS}/server" "${ASSETS}/etcd" 2>/dev/null || true
  fi
fi

if [[ ! -x "${ASSETS}/kubectl" ]]; then
  kubectl_bin="$(command -v kubectl || true)"
  if [[ -n "${kubectl_bin}" ]]; then
    ln -sf "${kubectl_bin}" "${ASSETS}/kubectl"
  else
    build_kube kubectl "${ASSETS}/kubectl.tmp"
    mv "${ASSETS}/kubectl.tmp" "${ASSETS}/kubectl"
  fi
fi

complete "${ASSETS}" || { log "incomplete assets in ${ASSETS}"; exit 1; }
log "ready in ${ASSETS}"
echo "${ASSETS}"
