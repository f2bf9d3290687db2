#!/usr/bin/env bash
# Installs the Debian packages the DTR-like test registry and the real clients need:
#   docker-registry (distribution), nginx, skopeo, openssl, containerd (ctr), curl, docker.io.
# With --node, also what the real-node tier (tests/cluster, `make demo-cluster`) needs:
#   runc and the bridge CNI plugins for containerd's CRI, iptables and conntrack for
#   kube-proxy, mmdebstrap and buildah for the images (hack/image/), gcc and libc6-dev
#   for the static pause binary.
#
# Idempotent: does nothing when every package is already installed, runs `apt-get update` only
# when something is missing. The distribution's services are never started: while installing, a
# policy-rc.d that answers 101 ("action forbidden") tells the packages' maintainer scripts not to
# start nginx, docker-registry or containerd; the test stack starts its own copies by PID, on
# 127.0.0.1 only. Any policy-rc.d that was already in place is put back afterwards.
set -euo pipefail

# prometheus: only for promtool, which tests the alerting rules in deploy/monitoring.
# docker.io: dockerd for the real-daemon test of the insecure-registry rule (tests/e2e).
PACKAGES=(docker-registry nginx skopeo openssl containerd curl prometheus docker.io)
NODE_PACKAGES=(runc containernetworking-plugins iptables conntrack iproute2 mmdebstrap buildah gcc libc6-dev)
if [[ "${1:-}" == "--node" ]]; then
    PACKAGES+=("${NODE_PACKAGES[@]}")
elif [[ -n "${1:-}" ]]; then
    echo "usage: $0 [--node]" >&2
    exit 2
fi
POLICY=/usr/sbin/policy-rc.d

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "system deps: all present (${PACKAGES[*]})"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "system deps: missing ${missing[*]}; run this script as root (it uses apt-get)" >&2
    exit 1
fi

backup=""
restore_policy() {
    if [[ -n "$backup" ]]; then
        mv -f "$backup" "$POLICY"
    else
        rm -f "$POLICY"
    fi
}
if [[ -e "$POLICY" ]]; then
    backup=$(mktemp "${POLICY}.dtrtrust-backup.XXXXXX")
    cp -p "$POLICY" "$backup"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# dtrtrust hack/install-system-deps.sh: never start services while installing\nexit 101\n' \
    >"$POLICY"
chmod 0755 "$POLICY"

export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
echo "system deps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "system deps: installed in $(($(date +%s) - start)) s"
