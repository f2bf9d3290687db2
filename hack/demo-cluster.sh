#!/usr/bin/env bash
# `make demo-cluster`: dtrtrust on a real single-node Kubernetes cluster, on this machine.
#   1. start the cluster: etcd, kube-apiserver, controller-manager, scheduler, containerd,
#      kubelet and kube-proxy (hack/kube/cluster.py; all on 127.0.0.1 or the bridge dtrtrust0)
#   2. start a DTR-like registry on the node's bridge, with a small image in it
#   3. install dtrtrust as an admin does: kubectl apply -k (deploy/ + the locally built image)
#   4. a DTRTrust for the registry, Ready on 1/1 nodes
#   5. the files the agent wrote on the node
#   6. a pod whose image is in the registry: containerd pulls it with exactly those files
# Everything is stopped on exit, whatever happens. Files stay under _demo-cluster/ (gitignored).
# Needs root (a bridge, iptables rules, mounts); `make demo-cluster` builds what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=_demo-cluster
VENV=${VENV:-.venv}
PY=$VENV/bin/python
KUBECTL=$VENV/bin/kubectl

if [[ -t 1 ]]; then bold=$'\033[1m' dim=$'\033[2m' reset=$'\033[0m'; else bold='' dim='' reset=''; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
note() { printf '%s    %s%s\n' "$dim" "$*" "$reset"; }
indent() { sed 's/^/    /'; }
show() { note "\$ kubectl $*"; "$KUBECTL" "$@" 2>&1 | indent; }

for tool in "$PY" "$KUBECTL"; do
    if [[ ! -x "$tool" ]]; then
        echo "demo-cluster: $tool not found; run \`make demo-cluster\` (it creates the venv first)" >&2
        exit 1
    fi
done
if [[ $(id -u) -ne 0 ]]; then
    echo "demo-cluster: run as root (it creates a bridge, iptables rules and mounts)" >&2
    exit 1
fi

stop_all() {
    step "Stopping everything"
    "$PY" tests/dtrstack.py stop --dir "$DEMO/stack" >/dev/null 2>&1 || true
    "$PY" hack/kube/cluster.py stop --run-dir "$DEMO/kube" 2>&1 | fold -s -w 96 | indent || true
    rm -rf "$DEMO/kube/node-root/var/lib/containerd"  # the unpacked images (hundreds of MB)
    note "logs and the node's files stay in $DEMO/ (make clean removes them)"
}
# A cluster left by an interrupted demo is stopped before anything else.
"$PY" hack/kube/cluster.py stop --run-dir "$DEMO/kube" >/dev/null 2>&1 || true
"$PY" tests/dtrstack.py stop --dir "$DEMO/stack" >/dev/null 2>&1 || true
rm -rf "$DEMO"
mkdir -p "$DEMO"
trap stop_all EXIT
T0=$(date +%s)
pyinfo() {  # facts from the harness: the node's address, the image names and digest
    "$PY" - "$@" <<'EOF'
import sys
from pathlib import Path

sys.path[:0] = ["tests/cluster", "tests/integration", "tests", "hack/image"]
import nodeharness
import nodeimages

what = sys.argv[1]
if what == "node-ip":
    print(nodeharness.NodeNetwork().node_ip)
elif what == "image":
    print(nodeimages.planned().project_ref)
elif what == "kustomization":
    images = nodeimages.planned()
    name, digest = nodeharness.archive_image(images.project_archive)
    print(nodeharness.install_kustomization(Path(sys.argv[2]), name.rpartition(":")[0], digest))
elif what == "workload":
    images = nodeimages.planned()
    print(images.workload_layout, images.workload_repository, images.workload_tag)
EOF
}

# -----------------------------------------------------------------------------------------------
step "1/6  Start a single-node Kubernetes cluster on this machine"
NODE_IP=$(pyinfo node-ip)
note "a bridge dtrtrust0 with $NODE_IP: the node's IP and the API server's address (pods reach it"
note "through the kubernetes Service, routed by kube-proxy); every other port on 127.0.0.1"
note "etcd, kube-apiserver, kube-controller-manager, kube-scheduler (built from Debian's source)"
note "containerd + runc + the bridge CNI, kubelet, kube-proxy (iptables); the image $(pyinfo image)"
note "(built from ./Dockerfile on a Debian base) imported into the node's containerd"
"$PY" hack/kube/cluster.py start --run-dir "$DEMO/kube" 2>"$DEMO/start.log" >"$DEMO/env" || {
    cat "$DEMO/start.log" >&2
    exit 1
}
indent <"$DEMO/start.log"
export KUBECONFIG="$DEMO/kube/control-plane/admin.kubeconfig"
NODE_ROOT=$DEMO/kube/node-root
show get nodes -o wide

# -----------------------------------------------------------------------------------------------
step "2/6  Start a DTR-like registry on the node's bridge, with an image in it"
"$PY" tests/dtrstack.py start --dir "$DEMO/stack" --host "$NODE_IP" >"$DEMO/stack.json"
field() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$DEMO/stack.json" "$1"; }
ADDR=$(field address)
read -r LAYOUT REPO TAG <<<"$(pyinfo workload)"
"$PY" - "$DEMO/stack" "$LAYOUT" "$REPO" "$TAG" <<'EOF'
import sys
from pathlib import Path

sys.path[:0] = ["tests"]
import dtrstack

dtrstack.load(Path(sys.argv[1])).push(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
EOF
IMAGE="$ADDR/$REPO:$TAG"
note "registry      https://$ADDR  (nginx TLS, client-certificate auth like DTR, docker-registry behind)"
note "image         $IMAGE  (pushed with the client certificate)"
note "CA pin        $(field root_sha256)"

# -----------------------------------------------------------------------------------------------
step "3/6  Install dtrtrust as an admin does: kubectl apply -k"
INSTALL=$(pyinfo kustomization "$DEMO/kustomize")
note "$INSTALL/kustomization.yaml: deploy/ plus a copy of deploy/overlays/image naming the local image"
indent <"$INSTALL/kustomization.yaml"
indent <"$DEMO/kustomize/image/kustomization.yaml"
note "\$ kubectl apply -k $INSTALL"
"$KUBECTL" apply -k "$INSTALL" | indent
show -n dtrtrust-system rollout status deployment/dtrtrust-operator --timeout=180s
for _ in $(seq 1 60); do
    "$KUBECTL" -n dtrtrust-system get daemonset dtrtrust-agent >/dev/null 2>&1 && break
    sleep 1
done
note "the operator created the agent DaemonSet itself:"
show -n dtrtrust-system rollout status daemonset/dtrtrust-agent --timeout=120s
show -n dtrtrust-system get pods -o wide

# -----------------------------------------------------------------------------------------------
step "4/6  A DTRTrust for the registry: fetch /ca pinned, the node's client certificate"
note "\$ kubectl -n dtrtrust-system create secret tls dtr-node-client --cert=... --key=..."
"$KUBECTL" -n dtrtrust-system create secret tls dtr-node-client \
    --cert="$(field client_cert)" --key="$(field client_key)" | indent
cat >"$DEMO/dtrtrust.yaml" <<EOF
apiVersion: dtrtrust.io/v1alpha1
kind: DTRTrust
metadata:
  name: demo
spec:
  registry: "$ADDR"
  ca:
    fetch:
      pinnedSHA256: ["$(field root_sha256)"]
  clientCertificate:
    secretRef: {name: dtr-node-client}
  targets: [docker, containerd]
EOF
indent <"$DEMO/dtrtrust.yaml"
show apply -f "$DEMO/dtrtrust.yaml"
show wait --for=condition=Ready dtrtrust/demo --timeout=120s
show get dtrtrust

# -----------------------------------------------------------------------------------------------
step "5/6  The files the agent wrote on the node"
note "(the node's /etc/containerd, /etc/docker, ... are $NODE_ROOT/... here)"
(cd "$NODE_ROOT" && find etc/containerd/certs.d etc/docker/certs.d -path '*/.dtrtrust-work' -prune \
    -o \( -type f -o -type d \) -printf '%M %m %6s  /%p\n' | sort -k4) | indent
note "/etc/containerd/certs.d/$ADDR/hosts.toml:"
indent <"$NODE_ROOT/etc/containerd/certs.d/$ADDR/hosts.toml"
note "and containerd reads that directory (/etc/containerd/config.toml):"
grep -B1 'config_path' "$NODE_ROOT/etc/containerd/config.toml" | indent

# -----------------------------------------------------------------------------------------------
step "6/6  A pod whose image is in that registry, with no imagePullSecret"
show run hello --image="$IMAGE" --image-pull-policy=Always --restart=Never
show wait --for=condition=Ready pod/hello --timeout=120s
show get pod hello -o wide
note "\$ kubectl get events --field-selector involvedObject.name=hello"
"$KUBECTL" get events --field-selector involvedObject.name=hello -o custom-columns=REASON:.reason,MESSAGE:.message |
    grep -v MissingClusterDNS | indent
show logs hello
note "containerd pulled it through CRI with the client certificate and CA the agent wrote."
note "demo ran in $(($(date +%s) - T0)) s"
