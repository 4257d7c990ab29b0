#!/usr/bin/env bash
# Builds a pinned tool from its committed tools module and prints the binary's path on stdout
# (logs go to stderr). Every tool has a module of its own under hack/tools/<dir>/ whose go.mod
# requires the tool at an exact version and whose go.sum pins everything it builds from. Builds
# run with -mod=readonly, GOTOOLCHAIN=local and GOWORK=off, so the go command can never resolve a
# version: a missing checksum or a needed go.mod change fails the build instead of picking
# "latest". Binaries are cached outside the checkout under a key made of the tool's version and
# a hash of its go.mod and go.sum, so a second run does not rebuild, and editing the module does.
#
#   hack/tool.sh NAME             build NAME if needed; print its path
#   hack/tool.sh --check          fail if any tools module is incomplete or would resolve anything
#   hack/tool.sh --pin NAME VER   (maintainers) rewrite NAME's tools module at version VER
#
# NAME is one of: controller-gen golangci-lint helm kustomize helm-docs kube-apiserver kubectl
# kube-controller-manager (run beside envtest by the tests that need the garbage collector or
# the ClusterRole aggregation controller) promtool (chart alert and dashboard tests).
# Builds go to a private temporary directory and are renamed into place, so concurrent runs
# sharing the cache never see a half-written binary or each other's files.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_ROOT="${CALLBACK_ROUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/callback-router}"
BIN="${CACHE_ROOT}/bin"
TOOLS=(controller-gen golangci-lint helm kustomize helm-docs kube-apiserver kubectl kube-controller-manager promtool)

log() { echo "tool: $*" >&2; }
die() { log "$*"; exit 1; }

# describe NAME: sets dir (under hack/tools), module (whose version is the tool's) and pkg.
describe() {
  case "$1" in
    controller-gen) dir=controller-gen; module=sigs.k8s.io/controller-tools; pkg=sigs.k8s.io/controller-tools/cmd/controller-gen ;;
    golangci-lint)  dir=golangci-lint;  module=github.com/golangci/golangci-lint/v2; pkg=${module}/cmd/golangci-lint ;;
    helm)           dir=helm;           module=helm.sh/helm/v3; pkg=helm.sh/helm/v3/cmd/helm ;;
    kustomize)      dir=kustomize;      module=sigs.k8s.io/kustomize/kustomize/v5; pkg=${module} ;;
    helm-docs)      dir=helm-docs;      module=github.com/norwoodj/helm-docs; pkg=${module}/cmd/helm-docs ;;
    kube-apiserver) dir=kubernetes;     module=k8s.io/kubernetes; pkg=k8s.io/kubernetes/cmd/kube-apiserver ;;
    kubectl)        dir=kubernetes;     module=k8s.io/kubernetes; pkg=k8s.io/kubernetes/cmd/kubectl ;;
    kube-controller-manager) dir=kubernetes; module=k8s.io/kubernetes; pkg=k8s.io/kubernetes/cmd/kube-controller-manager ;;
    promtool)       dir=promtool;       module=github.com/prometheus/prometheus; pkg=${module}/cmd/promtool ;;
    *) die "unknown tool '$1' (one of: ${TOOLS[*]})" ;;
  esac
  dir="${ROOT}/hack/tools/${dir}"
}

# The go command, unable to change a go.mod or go.sum, fetch a toolchain or use a workspace.
gocmd() { (cd "${dir}" && GOFLAGS=-mod=readonly GOTOOLCHAIN=local GOWORK=off go "$@"); }

# version: the exact version the tools module requires (read from go.mod, no go command run).
version() {
  local v
  v="$(sed -n "s#^\(require\)\?[[:space:]]*${module//./\\.} \(v[^ ]*\).*#\2#p" "${dir}/go.mod" | head -1)"
  [[ -n "${v}" ]] || die "${dir}/go.mod does not require ${module}"
  echo "${v}"
}

sum8() { cat "${dir}/go.mod" "${dir}/go.sum" | sha256sum | cut -c1-8; }

ldflags_for() { # $1: name, $2: version
  local flags="-s -w"
  case "$1" in
    helm)
      # What helm's own Makefile stamps in: its version, and the Kubernetes version that
      # `helm template`/`helm lint` assume without --kube-version (1.N for client-go's v0.N,
      # as upstream does); without it the default is the ancient v1.20.
      local minor
      minor="$(gocmd list -m -f '{{.Version}}' k8s.io/client-go | sed -n 's/^v0\.\([0-9]*\)\..*/\1/p')"
      [[ -n "${minor}" ]] || die "cannot find k8s.io/client-go's version in ${dir}"
      flags+=" -X helm.sh/helm/v3/internal/version.version=$2"
      for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        flags+=" -X ${p}.k8sVersionMajor=1 -X ${p}.k8sVersionMinor=${minor}"
      done ;;
    golangci-lint)
      flags+=" -X main.version=${2#v}" ;;
    kube-apiserver|kubectl|kube-controller-manager)
      local minor="${2#v1.}"; minor="${minor%%.*}"
      flags+=" -X k8s.io/component-base/version.gitVersion=$2"
      flags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}"
      flags+=" -X k8s.io/component-base/version.gitTreeState=clean" ;;
  esac
  echo "${flags}"
}

# check_binary NAME VERSION FILE: the binary was built from MODULE at VERSION, and, where the
# tool prints its own version, it prints that one. Fails loudly otherwise.
check_binary() {
  local got
  got="$(go version -m "$3" | awk -v m="${module}" '($1 == "dep" || $1 == "mod") && $2 == m {print $3}')"
  [[ "${got}" == "$2" ]] || die "$3 was built from ${module} ${got:-<none>}, not the pinned $2"
  case "$1" in
    kube-apiserver|kube-controller-manager)
      got="$("$3" --version)"
      [[ "${got}" == "Kubernetes $2" ]] || die "$3 --version says '${got}', not 'Kubernetes $2'" ;;
    helm)
      got="$("$3" version --template '{{.Version}}')"
      [[ "${got}" == "$2" ]] || die "$3 version says '${got}', not '$2'" ;;
  esac
}

build() { # NAME: prints the cached binary's path, building it first if needed
  describe "$1"
  local v out tmp
  v="$(version)"
  out="${BIN}/$1-${v}-$(sum8)"
  if [[ -x "${out}" ]]; then echo "${out}"; return; fi
  mkdir -p "${BIN}"
  tmp="$(mktemp -d "${BIN}/.build-$1.XXXXXX")"
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '${tmp}'" EXIT
  log "building $1 from ${module} ${v} (hack/tools/${dir##*/}; first run only, takes minutes)"
  CGO_ENABLED=0 gocmd build -trimpath -ldflags="$(ldflags_for "$1" "${v}")" -o "${tmp}/$1" "${pkg}" >&2
  check_binary "$1" "${v}" "${tmp}/$1"
  mv -f "${tmp}/$1" "${out}"
  rm -rf "${tmp}"
  trap - EXIT
  log "built ${out}"
  echo "${out}"
}

check() { # every tools module loads every package it builds from without resolving anything
  local name failed=0
  for name in "${TOOLS[@]}"; do
    describe "${name}"
    if ! out="$(gocmd list -deps "${pkg}" 2>&1 >/dev/null)"; then
      log "hack/tools/${dir##*/} cannot build ${pkg} read-only:"; echo "${out}" | head -20 >&2; failed=1
    fi
  done
  ((failed == 0)) || die "a tools module is incomplete: fix it with 'hack/tool.sh --pin NAME VERSION'"
  log "every tools module is complete and pinned (${TOOLS[*]})"
}

pin() { # NAME VERSION: rewrite the tools module (needs the module proxy; commit the result)
  describe "$1"
  local v="$2" mod tmp
  mkdir -p "${dir}"
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '${tmp}'" EXIT
  if [[ "${module}" == k8s.io/kubernetes ]]; then
    # kubernetes' own go.mod replaces each staging module with ./staging/...: map each to its
    # published v0.N.M twin, and keep kubernetes' godebug default.
    mod="$(cd "${tmp}" && GOFLAGS=-mod=mod go mod download -json "${module}@${v}" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')"
    {
      { sed -n '/^\/\/ /p' "${dir}/go.mod" 2>/dev/null || true; } | head -20
      echo "module callback-router.dev/tools/${dir##*/}"; echo
      echo "go $(sed -n 's/^go //p' "${mod}")"; echo
      sed -n '/^godebug /p' "${mod}"; echo
      echo "tool ("
      for c in kube-apiserver kube-controller-manager kubectl; do echo "	k8s.io/kubernetes/cmd/${c}"; done
      echo ")"; echo
      echo "require ${module} ${v}"; echo
      sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 v0'"${v#v1}"'#p' "${mod}"
    } > "${tmp}/go.mod"
    cp "${tmp}/go.mod" "${dir}/go.mod"; rm -f "${dir}/go.sum"
    (cd "${dir}" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod tidy)
  else
    local comment
    comment="$({ sed -n '/^\/\/ /p' "${dir}/go.mod" 2>/dev/null || true; } | head -20)"
    rm -f "${dir}/go.mod" "${dir}/go.sum"
    [[ -n "${comment}" ]] || comment="// The pinned build of $1 for this project: hack/tool.sh builds it read-only from this module.
// Change it only with hack/tool.sh --pin $1 VERSION, and commit go.mod and go.sum."
    (cd "${dir}" && printf '%s\nmodule callback-router.dev/tools/%s\n\ngo 1.26.0\n' "${comment}" "${dir##*/}" > go.mod &&
      GOFLAGS=-mod=mod GOTOOLCHAIN=local go get -tool "${pkg}@${v}")
  fi
  log "pinned $1 at ${v} in hack/tools/${dir##*/}; review and commit go.mod and go.sum"
}

case "${1:-}" in
  --check) check ;;
  --pin)   [[ $# == 3 ]] || die "usage: $0 --pin NAME VERSION"; pin "$2" "$3" ;;
  ""|-*)   die "usage: $0 NAME | --check | --pin NAME VERSION (NAME: ${TOOLS[*]})" ;;
  *)       build "$1" ;;
esac
