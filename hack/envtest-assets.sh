#!/usr/bin/env bash
# Provides the envtest control-plane binaries (kube-apiserver, etcd, kubectl) without the
# usual envtest download bucket, which this environment cannot reach:
#   - kube-apiserver is built by hack/tool.sh from the committed tools module
#     hack/tools/kubernetes (k8s.io/kubernetes at an exact version, read-only build, checked
#     to report that version);
#   - etcd comes from Debian's etcd-server package (installed if missing, without starting
#     its service), or is built from go.etcd.io/etcd/server/v3 when apt is not available;
#   - kubectl is taken from PATH or built from hack/tools/kubernetes as well.
# The assets directory is cached outside the checkout, keyed by the tools module's version and
# checksum, so a second run does not rebuild. KUBEBUILDER_ASSETS, when set and complete, wins
# and nothing is built. Prints the assets directory on stdout (everything else goes to stderr).
set -euo pipefail

HACK="$(cd "$(dirname "$0")" && pwd)"
ETCD_GO_VERSION="${ETCD_GO_VERSION:-v3.5.21}"
CACHE_ROOT="${CALLBACK_ROUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/callback-router}"

log() { echo "envtest-assets: $*" >&2; }

complete() { [[ -x "$1/kube-apiserver" && -x "$1/etcd" && -x "$1/kubectl" ]]; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && complete "${KUBEBUILDER_ASSETS}"; then
  log "using KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
  echo "${KUBEBUILDER_ASSETS}"
  exit 0
fi

# link NAME TARGET: point ASSETS/NAME at TARGET atomically (a concurrent run sees the old
# link or the new one, never none).
link() {
  local tmp
  tmp="$(mktemp -u "${ASSETS}/.$1.XXXXXX")"
  ln -s "$2" "${tmp}"
  mv -fT "${tmp}" "${ASSETS}/$1"
}

apiserver="$("${HACK}/tool.sh" kube-apiserver)"           # cached after the first build
ASSETS="${CACHE_ROOT}/envtest/$(basename "${apiserver}" | sed 's/^kube-apiserver-//')"
if complete "${ASSETS}"; then
  echo "${ASSETS}"
  exit 0
fi
mkdir -p "${ASSETS}"
link kube-apiserver "${apiserver}"

if [[ ! -x "${ASSETS}/etcd" ]]; then
  etcd_bin="$(command -v etcd || true)"
  if [[ -z "${etcd_bin}" && -x /usr/bin/apt-get && "$(id -u)" == 0 ]]; then
    log "installing Debian's etcd-server"
    "${HACK}/apt-install.sh" etcd-server >&2 || true
    etcd_bin="$(command -v etcd || true)"
  fi
  if [[ -z "${etcd_bin}" ]]; then
    log "building etcd ${ETCD_GO_VERSION} from Go modules"
    tmp="$(mktemp -d "${ASSETS}/.etcd.XXXXXX")"
    (cd "${tmp}" && GOBIN="${tmp}" GOTOOLCHAIN=local CGO_ENABLED=0 go install "go.etcd.io/etcd/server/v3@${ETCD_GO_VERSION}") >&2
    mv -f "${tmp}/server" "${ASSETS}/etcd.bin" && rm -rf "${tmp}"
    etcd_bin="${ASSETS}/etcd.bin"
  fi
  link etcd "${etcd_bin}"
fi

if [[ ! -x "${ASSETS}/kubectl" ]]; then
  kubectl_bin="$(command -v kubectl || true)"
  [[ -n "${kubectl_bin}" ]] || kubectl_bin="$("${HACK}/tool.sh" kubectl)"
  link kubectl "${kubectl_bin}"
fi

complete "${ASSETS}" || { log "incomplete assets in ${ASSETS}"; exit 1; }
log "ready in ${ASSETS}"
echo "${ASSETS}"
