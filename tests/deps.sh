#!/usr/bin/env bash
# Installs the Debian packages that detour's tests, demo and local cluster use.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

packages=(
  iproute2 nftables iptables conntrack          # netns worlds, guard, kube-proxy
  containerd runc containernetworking-plugins   # the local cluster's runtime
  curl ca-certificates libcap2-bin util-linux   # readiness checks; capsh for the NET_ADMIN test; flock, nsenter
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
# containerd's Debian unit may start the system daemon; the local cluster runs
# its own instance with its own socket, so the system one is not needed.
echo "deps: ok"
