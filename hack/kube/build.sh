#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy from Debian's `kubernetes` source
# package, once, into a versioned cache directory, and reuses them afterwards.
#
#   bash hack/kube/build.sh          # prints the bin directory on its last line
#
# Cache: ${DTRTRUST_CACHE:-$HOME/.cache/dtrtrust}/kube-<source version>/bin/
# A second run finds the binaries and exits at once. To rebuild, delete that directory.
# A failed build leaves its work tree (and Go build cache) in kube-<version>/work/, so a
# rerun resumes where it stopped; a successful build removes it (about 2 GB).
#
# No registry ships these binaries; the source package holds the full upstream tree with
# vendor/, and builds offline (see issue 4 for the measured facts behind each step).
set -euo pipefail

CACHE="${DTRTRUST_CACHE:-$HOME/.cache/dtrtrust}"
APT_PACKAGES=(golang-1.19-go etcd-server rsync golang-github-modern-go-reflect2-dev)
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
T0=$(date +%s)

log() { printf '[kube-build %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf 'kube-build: %s\n' "$*" >&2; exit 1; }

complete_bin_dir() {  # $1 = kube-<version> dir; true when it holds every binary
    local b
    for b in "${BINARIES[@]}"; do [[ -x "$1/bin/$b" ]] || return 1; done
}

# Fast path: a finished build is reused whatever its version (delete it to rebuild).
shopt -s nullglob
for dir in "$CACHE"/kube-*/; do
    dir="${dir%/}"
    if complete_bin_dir "$dir" && command -v etcd >/dev/null; then
        log "reusing $dir/bin (delete that directory to rebuild)"
        echo "$dir/bin"
        exit 0
    fi
done
shopt -u nullglob

# --- Debian packages -------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    log "installing ${missing[*]}"
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        log "apt-get install failed; refreshing the package lists and retrying"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi
GO_ROOT_BIN=/usr/lib/go-1.19/bin
[[ -x "$GO_ROOT_BIN/go" ]] || die "Go 1.19 not found in $GO_ROOT_BIN after installing golang-1.19-go"
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
[[ -d "$REFLECT2" ]] || die "$REFLECT2 missing: install golang-github-modern-go-reflect2-dev"

# --- deb-src entries, derived from this machine's own apt sources -----------------------
# A private apt configuration, so the system's sources and lists stay untouched.
APT_DIR="$CACHE/apt-src"
mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial"
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    sed -E 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
        >"$APT_DIR/sources.list.d/debian-src.sources"
elif [[ -f /etc/apt/sources.list ]]; then
    sed -nE 's/^[[:space:]]*deb([[:space:]])/deb-src\1/p' /etc/apt/sources.list \
        >"$APT_DIR/sources.list.d/debian-src.list"
else
    die "no apt sources found (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)"
fi
APT_OPTS=(
    -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "APT::Sandbox::User=root"  # the private lists dir is root's; say so rather than warn
)
# Refreshed on every cold build (a second or two): stale lists would name a file the
# mirror no longer has.
log "fetching the deb-src package lists (private copy in $APT_DIR)"
apt-get "${APT_OPTS[@]}" update -qq
VERSION=$(apt-cache "${APT_OPTS[@]}" showsrc kubernetes | sed -n 's/^Version: //p' | sort -V | tail -n1)
[[ -n "$VERSION" ]] || die "the kubernetes source package is not in the deb-src lists"
VERSION="${VERSION#*:}"   # drop an epoch, if any
KDIR="$CACHE/kube-$VERSION"
log "kubernetes source package $VERSION -> $KDIR"

# --- source tree ------------------------------------------------------------------------
WORK="$KDIR/work"
TREE="$WORK/.go/src/k8s.io/kubernetes"
if [[ ! -f "$TREE/.unpacked" ]]; then
    rm -rf "$WORK"
    mkdir -p "$WORK/dl" "$(dirname "$TREE")"
    log "downloading the source package"
    (cd "$WORK/dl" && apt-get "${APT_OPTS[@]}" source --download-only -qq "kubernetes=$VERSION" >/dev/null 2>&1) \
        || (cd "$WORK/dl" && apt-get "${APT_OPTS[@]}" source --download-only "kubernetes=$VERSION")
    orig=("$WORK"/dl/kubernetes_*.orig.tar.*)
    [[ -f "${orig[0]}" ]] || die "no kubernetes_*.orig.tar.* downloaded into $WORK/dl"
    log "unpacking $(basename "${orig[0]}")"
    mkdir -p "$TREE"
    tar -xf "${orig[0]}" -C "$TREE" --strip-components=1
    # reflect2 v1.0.1 (vendored) crashes under Go >= 1.18: use Debian's 1.0.2.
    rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
    rsync -a --exclude go.mod --exclude go.sum "$REFLECT2/" "$TREE/vendor/github.com/modern-go/reflect2/"
    rm -rf "$WORK/dl"
    touch "$TREE/.unpacked"
fi

# --- build ------------------------------------------------------------------------------
log "building ${BINARIES[*]} (about 6-8 minutes cold on 2 cores)"
(
    cd "$TREE"
    export PATH="$GO_ROOT_BIN:$PATH" GOPATH="$WORK/.go" GOCACHE="$WORK/go-build" \
        CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor GOMAXPROCS="${GOMAXPROCS:-2}"
    what=""
    for b in "${BINARIES[@]}"; do what+="cmd/$b "; done
    make WHAT="${what% }"
)
OUT="$TREE/_output/bin"
rm -rf "$KDIR/bin.tmp"
mkdir -p "$KDIR/bin.tmp"
for b in "${BINARIES[@]}"; do
    [[ -x "$OUT/$b" ]] || die "the build finished without $OUT/$b"
    cp "$OUT/$b" "$KDIR/bin.tmp/$b"
done
mv "$KDIR/bin.tmp" "$KDIR/bin"
log "built: $("$KDIR/bin/kube-apiserver" --version 2>&1)"
rm -rf "$WORK"
log "done in $(($(date +%s) - T0))s"
echo "$KDIR/bin"
