#!/usr/bin/env bash
# Provides a pinned command-line tool built from Go modules, cached outside the checkout
# and keyed by version, so that a fresh machine needs only Go and the module proxy and a
# second run does not rebuild. Prints the binary's path on stdout (logs go to stderr).
#
#   hack/tool.sh helm        # helm.sh/helm/v3/cmd/helm            @ HELM_VERSION
#   hack/tool.sh kustomize   # sigs.k8s.io/kustomize/kustomize/v5  @ KUSTOMIZE_VERSION
#   hack/tool.sh helm-docs   # github.com/norwoodj/helm-docs/cmd/helm-docs @ HELM_DOCS_VERSION
#
# The Makefile uses it as: HELM="$(hack/tool.sh helm)" KUSTOMIZE="$(hack/tool.sh kustomize)".
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.1}"
HELM_DOCS_VERSION="${HELM_DOCS_VERSION:-v1.14.2}"
CACHE_ROOT="${CALLBACK_ROUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/callback-router}"
BIN="${CACHE_ROOT}/bin"

log() { echo "tool: $*" >&2; }

case "${1:-}" in
  helm)      name=helm;      version="${HELM_VERSION}";      pkg="helm.sh/helm/v3/cmd/helm" ;;
  kustomize) name=kustomize; version="${KUSTOMIZE_VERSION}"; pkg="sigs.k8s.io/kustomize/kustomize/v5" ;;
  helm-docs) name=helm-docs; version="${HELM_DOCS_VERSION}"; pkg="github.com/norwoodj/helm-docs/cmd/helm-docs" ;;
  *) echo "usage: $0 helm|kustomize|helm-docs" >&2; exit 2 ;;
esac

out="${BIN}/${name}-${version}"
if [[ -x "${out}" ]]; then
  echo "${out}"
  exit 0
fi

# Build into a private directory and rename, so that an interrupted or concurrent build
# never leaves a half-written binary under the final name.
tmp="$(mkdir -p "${BIN}" && mktemp -d "${BIN}/.build-${name}.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT
ldflags="-s -w"
if [[ "${name}" == helm ]]; then
  # What helm's own Makefile stamps in: its version, and the Kubernetes version that
  # `helm template`/`helm lint` assume without --kube-version (1.N for client-go's
  # v0.N, as upstream does); without it the default is the ancient v1.20.
  gomod="$(cd "${tmp}" && GOFLAGS= go mod download -json "helm.sh/helm/v3@${version}" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')"
  minor="$(sed -n 's#^\s*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "${gomod}")"
  [[ -n "${minor}" ]] || { log "cannot find k8s.io/client-go in ${gomod}"; exit 1; }
  ldflags+=" -X helm.sh/helm/v3/internal/version.version=${version}"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X ${p}.k8sVersionMajor=1 -X ${p}.k8sVersionMinor=${minor}"
  done
fi
log "building ${pkg}@${version} (first run only; takes a few minutes)"
# Run outside the project so its go.mod does not take part in the build.
(cd "${tmp}" && GOFLAGS= GOBIN="${tmp}" CGO_ENABLED=0 go install -trimpath -ldflags="${ldflags}" "${pkg}@${version}") >&2
mv -f "${tmp}/${name}" "${out}"
log "built ${out}"
echo "${out}"
