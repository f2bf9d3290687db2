#!/usr/bin/env bash
# `make demo`: the whole flow on this machine, no cluster needed.
#   1. start a DTR-like registry (nginx + docker-registry, TLS, client-certificate auth) on 127.0.0.1
#   2. write a DTRTrust for it, pinned to the registry's CA, with the node's client certificate
#   3. `dtrtrust apply` it into a local host root (_demo/host) instead of the real /
#   4. show the files it wrote and their modes
#   5. pull the test image with skopeo (and containerd's ctr) using exactly those files
# The registry is stopped on exit, whatever happens. Everything lives under _demo/ (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=${DTRTRUST_DEMO_DIR:-_demo}  # the test of `make demo` runs it in a temporary directory
VENV=${VENV:-.venv}
PY=$VENV/bin/python
DTRTRUST=$VENV/bin/dtrtrust

if [[ -t 1 ]]; then bold=$'\033[1m' dim=$'\033[2m' reset=$'\033[0m'; else bold='' dim='' reset=''; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
note() { printf '%s    %s%s\n' "$dim" "$*" "$reset"; }
indent() { sed 's/^/    /'; }

for tool in "$PY" "$DTRTRUST"; do
    if [[ ! -x "$tool" ]]; then
        echo "demo: $tool not found; run \`make demo\` (it creates the venv first)" >&2
        exit 1
    fi
done

rm -rf "$DEMO"
mkdir -p "$DEMO"
stop_stack() { "$PY" tests/dtrstack.py stop --dir "$DEMO/stack" >/dev/null 2>&1 || true; }
trap stop_stack EXIT

# -----------------------------------------------------------------------------------------------
step "1/5  Start a DTR-like registry on 127.0.0.1"
"$PY" tests/dtrstack.py start --dir "$DEMO/stack" >"$DEMO/stack.json"
field() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$DEMO/stack.json" "$1"; }
ADDR=$(field address)
IMAGE_REF=$(field image_ref)
PIN=$(field root_sha256)
note "registry        https://$ADDR  (nginx TLS in front of docker-registry; started in $(field start_seconds) s)"
note "client auth     TLS client certificate signed by the registry's client CA, as DTR does"
note "CA endpoint     https://$ADDR/ca  (served without authentication)"
note "test image      $IMAGE_REF"
note "CA fingerprint  $PIN  (the pin you would get from your DTR admin)"

# -----------------------------------------------------------------------------------------------
step "2/5  Write a DTRTrust for it: fetch /ca pinned to that fingerprint, plus the node's client pair"
MANIFEST=$DEMO/dtrtrust.yaml
"$PY" - "$DEMO/stack.json" "$MANIFEST" <<'EOF'
import json
import sys
from pathlib import Path

stack = json.loads(Path(sys.argv[1]).read_text())


def block(pem_path: str) -> str:
    return "".join(f"    {line}\n" for line in Path(pem_path).read_text().splitlines())


Path(sys.argv[2]).write_text(
    f"""apiVersion: dtrtrust.io/v1alpha1
kind: DTRTrust
metadata:
  name: demo
spec:
  registry: "{stack["address"]}"
  ca:
    fetch:
      pinnedSHA256: ["{stack["root_sha256"]}"]
  clientCertificate:
    secretRef:
      name: demo-node-client
  verify:
    clientAuth: true
  targets: [containers, containerd]
---
# The node's client certificate, as `kubectl create secret tls` would make it.
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: demo-node-client
  namespace: dtrtrust-system
stringData:
  tls.crt: |
{block(stack["client_cert"])}  tls.key: |
{block(stack["client_key"])}"""
)
EOF
chmod 0600 "$MANIFEST"
sed -n '1,/^---$/p' "$MANIFEST" | sed '$d' | indent
note "(followed in the same file by the kubernetes.io/tls Secret demo-node-client with the node's client pair)"

# -----------------------------------------------------------------------------------------------
step "3/5  dtrtrust apply -f $MANIFEST --host-root $DEMO/host"
HOST=$DEMO/host
mkdir -p "$HOST/etc/containerd" # stands for the host's /, which always exists
# The node's containerd, configured to read certs.d (without config_path it ignores it,
# and dtrtrust apply says so instead of reporting Ready).
printf 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n' \
    >"$HOST/etc/containerd/config.toml"
note "targets: containers (skopeo, podman, CRI-O) and containerd; not docker: dockerd treats"
note "every loopback registry like this one as insecure and never reads certs.d for it"
note "(apply would say NotEffective; a real DTR has a real name)"
set +e
"$DTRTRUST" apply -f "$MANIFEST" --host-root "$HOST" 2>&1 | indent
applied=${PIPESTATUS[0]}
set -e
if [[ $applied -ne 0 ]]; then
    echo "demo: dtrtrust apply did not report Ready (exit $applied); see its status above" >&2
    exit 1
fi

# -----------------------------------------------------------------------------------------------
step "4/5  The files it wrote (mode, size, path under $HOST)"
find "$HOST/etc" \( -type f -o -type d \) -printf '%M %m %6s  etc/%P\n' | sort -k4 | indent
note "keys are 0600, everything else 0644; a real node gets the same tree under /"
others=$(find "$HOST" -mindepth 1 -maxdepth 1 ! -name etc -printf '%P/ ' | sort)
[[ -z $others ]] || note "also under $HOST: $others(dtrtrust's record of what it owns)"

# -----------------------------------------------------------------------------------------------
step "5/5  Pull $IMAGE_REF with real clients, using exactly those files"
CERTS=$HOST/etc/containers/certs.d/$ADDR
if [[ ! -f $CERTS/ca.crt ]]; then
    echo "demo: dtrtrust apply reported Ready but wrote no $CERTS/ca.crt" >&2
    exit 1
fi
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$DEMO/policy.json"
note "\$ skopeo copy --src-cert-dir $CERTS docker://$IMAGE_REF oci:$DEMO/pulled:1.0"
skopeo --policy "$DEMO/policy.json" copy --quiet --src-cert-dir "$CERTS" \
    "docker://$IMAGE_REF" "oci:$DEMO/pulled:1.0"
"$PY" - "$DEMO/pulled" <<'EOF'
import json
import sys
import tarfile
from pathlib import Path

layout = Path(sys.argv[1])
blobs = layout / "blobs" / "sha256"
index = json.loads((layout / "index.json").read_text())
manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
with tarfile.open(layer) as tar:
    for member in tar.getmembers():
        data = tar.extractfile(member)
        text = data.read().decode().strip() if data else ""
        print(f"    pulled: {member.name}: {text!r}")
EOF

if command -v ctr >/dev/null; then
    note "\$ ctr content fetch-object --hosts-dir $HOST/etc/containerd/certs.d $IMAGE_REF"
    ctr content fetch-object --hosts-dir "$HOST/etc/containerd/certs.d" "$IMAGE_REF" >"$DEMO/manifest.json"
    printf '    containerd fetched the manifest (%s bytes) through the hosts.toml dtrtrust wrote\n' \
        "$(wc -c <"$DEMO/manifest.json")"
fi

note "and without dtrtrust's files the same pull is refused:"
if skopeo --policy "$DEMO/policy.json" inspect "docker://$IMAGE_REF" >/dev/null 2>"$DEMO/refused.txt"; then
    echo "demo: skopeo pulled without the files; this host trusts the test CA some other way" >&2
else
    sed -n 's/.*\(x509: [^"]*\|[0-9]\{3\} ([A-Za-z ]*)\).*/\1/p' "$DEMO/refused.txt" | head -1 | indent
fi

step "Done: stopping the registry"
note "the manifest, the host tree and the registry's logs stay in $DEMO/ (make clean removes them)"
