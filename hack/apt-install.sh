#!/usr/bin/env bash
# Installs Debian packages for the tests (as root) without letting their maintainer scripts start
# services: a package such as etcd-server would otherwise start a system etcd that nobody uses
# (the tests run their own on random ports). policy-rc.d is Debian's switch for that
# (invoke-rc.d and deb-systemd-invoke both obey it); ours is removed again afterwards, and one
# that was already there is left alone. Nothing is stopped or killed by name.
set -euo pipefail
(($#)) || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
policy=/usr/sbin/policy-rc.d
if [[ ! -e "${policy}" ]]; then
  printf '#!/bin/sh\n# callback-router hack/apt-install.sh: start no services while installing\nexit 101\n' > "${policy}"
  chmod 755 "${policy}"
  trap 'rm -f "${policy}"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
echo "apt-install: $*" >&2
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
