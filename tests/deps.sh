#!/usr/bin/env bash
# Installs the Debian packages that detour's tests, demo and local cluster use.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

packages=(
  iproute2 nftables iptables conntrack          # netns worlds, guard, kube-proxy
  containerd runc containernetworking-plugins   # the local cluster's runtime
  curl ca-certificates libcap2-bin util-linux   # readiness checks; capsh for the NET_ADMIN test; flock, nsenter
  procps bsdutils                               # pgrep (leftover-process checks), script(1) (the Ctrl-C pty test)
  tcsh                                          # --env-syntax csh read back by a real csh (TestEnvSyntaxRoundTrip)
  haproxy chromium                              # HTTP-routing benchmark and e2e: a reverse proxy, a real browser
  jq                                            # deploy/ci/detour-preview.sh reads detour status -o json (e2e TestCIPreviewScript)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages ${missing[*]}; run as root (or install them) and retry" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# containerd's and haproxy's Debian units may start system daemons; the local
# cluster runs its own containerd with its own socket, and the tests run their
# own haproxy with their own configuration, so the system ones are not needed
# (Debian's default haproxy.cfg has no frontend, so it listens on nothing).
echo "deps: ok"
