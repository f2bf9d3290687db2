#!/usr/bin/env python3
"""The real-node tier's images, built on this machine without any registry on the internet.

    .venv/bin/python hack/image/nodeimages.py          # build what is missing; prints JSON
    .venv/bin/python hack/image/nodeimages.py --check  # only: is this set built?

What it makes, each cached under ``${DTRTRUST_CACHE:-~/.cache/dtrtrust}/images/`` and keyed
by its inputs, so a second run builds nothing:

* **python-base** stands in for the Dockerfile's ``python:3.11-*-slim`` base: Debian's
  ``python3`` installed by ``mmdebstrap`` from this machine's own apt sources, with a virtual
  environment at ``/opt/venv`` first on ``PATH``. Debian's interpreter is "externally
  managed" (PEP 668) and has no ``python`` command; the venv gives ``python``, ``pip`` and a
  ``pip install`` / ``pip uninstall`` that work as in the official image. Key: the package
  list, the mmdebstrap options, the apt sources and apt's ``Acquire::`` settings.
* **dtrtrust** is the project's real ``Dockerfile``, unchanged, built by ``buildah`` with
  ``--pull=never`` and ``--build-arg PYTHON_IMAGE=<the stand-in>``. Its build stage runs
  ``pip wheel``: pip inside reads a wheelhouse made on this host with this host's pip
  configuration, mounted with ``/etc/pip.conf`` (``no-index``) for the build only, and no
  network (``--network=none``). Key: the Dockerfile, .dockerignore, every file of the build
  context, the base and the wheelhouse.
* **pause** is the pod sandbox image: ``hack/image/pause.c`` compiled static, alone in one
  layer. **workload** is the test pod's image: the same binary and ``hello.txt``, printed at
  start; the tests push it into the DTR-like registry. Key: pause.c and the compiler.

The dtrtrust and pause images are OCI archives that ``ctr -n k8s.io images import`` takes;
the workload is an OCI layout that ``skopeo copy`` pushes. Everything is named under
``localhost/``, so a runtime that ever tried to pull one would dial only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests")]

import dtrstack  # noqa: E402

SUITE = "bookworm"
#: Debian packages of the stand-in base: the interpreter, venv, CA roots, and passwd for the
#: Dockerfile's groupadd/useradd (all in the official image too).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")
VENV = "/opt/venv"
MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    # usr-is-merged instead of the usrmerge conversion tool (which pulls in perl).
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    f'--customize-hook=chroot "$1" python3 -m venv {VENV}',
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
)
BASE_ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "VIRTUAL_ENV": VENV,
    "LANG": "C.UTF-8",
}
#: Bumped when the recipe changes in a way the inputs above do not show.
RECIPE = "1"
WORKLOAD_REPOSITORY = "dtrtrust/workload"
WORKLOAD_TAG = "1.0"
WORKLOAD_FILE = "hello.txt"
WORKLOAD_CONTENT = b"hello from the DTR-like registry, pulled by the node's containerd\n"


class BuildError(RuntimeError):
    """A build step failed; the message names the step and its log."""


def cache_dir() -> Path:
    return Path(os.environ.get("DTRTRUST_CACHE") or Path.home() / ".cache" / "dtrtrust")


@dataclasses.dataclass(frozen=True)
class NodeImages:
    """This tree's image set: names and where the built artefacts are (or will be)."""

    base_ref: str
    base_archive: Path
    project_ref: str
    project_archive: Path
    pause_ref: str
    pause_archive: Path
    workload_layout: Path
    workload_repository: str = WORKLOAD_REPOSITORY
    workload_tag: str = WORKLOAD_TAG
    workload_file: str = WORKLOAD_FILE
    workload_content: bytes = WORKLOAD_CONTENT

    def missing(self) -> list[str]:
        out = [
            name
            for name, path in (
                ("python-base", self.base_archive),
                ("dtrtrust", self.project_archive),
                ("pause", self.pause_archive),
                ("workload", self.workload_layout / "index.json"),
            )
            if not path.exists()
        ]
        return out

    def to_json(self) -> dict[str, str]:
        return {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(self).items()
            if not isinstance(v, bytes)
        }


# --- keys -------------------------------------------------------------------------------


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def apt_sources() -> list[Path]:
    """This machine's apt sources, as apt reads them (mmdebstrap takes the files as they
    are: the mirror is never written down here)."""
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    files += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    one_line = Path("/etc/apt/sources.list")
    if one_line.exists() and any(
        line.strip().startswith("deb ") for line in one_line.read_text().splitlines()
    ):
        files.append(one_line)
    if not files:
        raise BuildError("no apt sources in /etc/apt/sources.list(.d): cannot run mmdebstrap")
    return files


def apt_acquire_options() -> list[str]:
    """apt's ``Acquire::`` settings on this machine (proxies, validity checks), handed to
    mmdebstrap's apt, which does not read the host's apt.conf.d."""
    done = subprocess.run(
        ["apt-config", "dump", "Acquire"], capture_output=True, text=True, check=False
    )
    return [
        line.strip()
        for line in done.stdout.splitlines()
        if line.startswith("Acquire::") and not line.rstrip().endswith('"";')
    ]


def base_key() -> str:
    parts = [RECIPE.encode(), SUITE.encode(), "\0".join(BASE_PACKAGES).encode()]
    parts += [o.encode() for o in MMDEBSTRAP_OPTIONS]
    parts += [json.dumps(BASE_ENV, sort_keys=True).encode()]
    parts += [p.read_bytes() for p in apt_sources()]
    parts += [o.encode() for o in apt_acquire_options()]
    return _digest(parts)


def context_files(root: Path) -> list[Path]:
    """The files of the Docker build context, by the rules of ``.dockerignore`` as that
    file uses them (``*`` first, then ``!`` includes, then excludes)."""
    includes: list[str] = []
    excludes: list[str] = []
    for raw in (root / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "*":
            continue
        (includes if line.startswith("!") else excludes).append(line.lstrip("!").rstrip("/"))
    found: list[Path] = []
    for inc in includes:
        path = root / inc
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in candidates:
            rel = p.relative_to(root).as_posix()
            if not any(_ignored(rel, pattern) for pattern in excludes):
                found.append(p)
    return found


def _ignored(rel: str, pattern: str) -> bool:
    if "**" in pattern:
        head, _, tail = pattern.partition("**/")
        return rel.startswith(head) and any(
            fnmatch.fnmatch(part, tail.split("/")[0]) for part in rel[len(head) :].split("/")
        )
    return fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel, pattern + "/*")


def wheelhouse_key(root: Path) -> str:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return _digest([RECIPE.encode(), tag.encode(), (root / "pyproject.toml").read_bytes()])


def project_key(root: Path, base: str, wheels: str) -> str:
    parts = [RECIPE.encode(), base.encode(), wheels.encode()]
    parts += [(root / "Dockerfile").read_bytes(), (root / ".dockerignore").read_bytes()]
    for path in context_files(root):
        parts += [path.relative_to(root).as_posix().encode(), path.read_bytes()]
    return _digest(parts)


def pause_key(root: Path) -> str:
    cc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=False)
    return _digest(
        [RECIPE.encode(), (root / "hack/image/pause.c").read_bytes(), cc.stdout.encode()]
    )


def project_version(root: Path) -> str:
    for line in (root / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise BuildError("no version in pyproject.toml")


def planned(root: Path = ROOT, cache: Path | None = None) -> NodeImages:
    """The image set of the tree at ``root``: computed from the inputs, nothing built."""
    images = (cache or cache_dir()) / "images"
    base = base_key()[:16]
    project = project_key(root, base, wheelhouse_key(root))[:16]
    pause = pause_key(root)[:16]
    return NodeImages(
        base_ref=f"localhost/dtrtrust/python-base:3-{SUITE}-{base}",
        base_archive=images / f"python-base-{base}.oci.tar",
        project_ref=f"localhost/dtrtrust/dtrtrust:{project_version(root)}-{project}",
        project_archive=images / f"dtrtrust-{project}.oci.tar",
        pause_ref=f"localhost/dtrtrust/pause:{pause}",
        pause_archive=images / f"pause-{pause}.oci.tar",
        workload_layout=images / f"workload-{pause}",
    )


# --- building ---------------------------------------------------------------------------


class Builder:
    def __init__(self, root: Path, cache: Path, log: Path) -> None:
        self.root = root
        self.cache = cache
        self.images = cache / "images"
        self.log = log
        self.timings: dict[str, float] = {}
        storage = self.images / "buildah"
        self.buildah = [
            _need("buildah"),
            "--root",
            str(storage / "root"),
            "--runroot",
            str(storage / "runroot"),
            "--storage-driver",
            "overlay",
        ]

    def run(self, step: str, argv: Sequence[str], **kwargs: object) -> str:
        with self.log.open("a") as out:
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            done = subprocess.run(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
                check=False,
                **kwargs,  # type: ignore[call-overload]
            )
            out.write(done.stdout)
        if done.returncode != 0:
            raise BuildError(f"{step} failed (exit {done.returncode}); see {self.log}")
        return str(done.stdout)

    def timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)
        _say(f"{name}: built in {self.timings[name]:.0f}s")

    def base(self, images: NodeImages) -> None:
        if images.base_archive.exists():
            return
        started = time.monotonic()
        _need("mmdebstrap")
        with tempfile.TemporaryDirectory(prefix="base-", dir=self.images) as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            argv = [_need("mmdebstrap"), *MMDEBSTRAP_OPTIONS]
            argv += [f"--include={','.join(BASE_PACKAGES)}"]
            argv += [f"--aptopt={o}" for o in apt_acquire_options()]
            argv += [SUITE, str(rootfs), *map(str, apt_sources())]
            _say(f"python-base: mmdebstrap {SUITE} ({', '.join(BASE_PACKAGES)}), about a minute")
            self.run("mmdebstrap", argv)
            container = self.run("buildah from", [*self.buildah, "from", "scratch"]).strip()
            try:
                self.run("buildah add", [*self.buildah, "add", container, str(rootfs), "/"])
                config = [*self.buildah, "config", "--os", "linux", "--arch", "amd64"]
                for k, v in BASE_ENV.items():
                    config += ["--env", f"{k}={v}"]
                config += ["--cmd", '["python3"]', container]
                self.run("buildah config", config)
                self.run("buildah commit", [*self.buildah, "commit", container, images.base_ref])
            finally:
                subprocess.run([*self.buildah, "rm", container], capture_output=True, check=False)
            self._export(images.base_ref, images.base_archive)
        self.timed("python-base", started)

    def wheelhouse(self) -> Path:
        """Wheels of every dependency and build requirement, made by this host's pip with
        this host's configuration (its index, find-links, constraints)."""
        target = self.images / f"wheelhouse-{wheelhouse_key(self.root)[:16]}"
        if (target / ".complete").exists():
            return target
        started = time.monotonic()
        shutil.rmtree(target, ignore_errors=True)
        requires = _build_requires(self.root)
        self.run(
            "pip wheel",
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--wheel-dir",
                str(target),
                str(self.root),
                *requires,
            ],
        )
        for own in target.glob("dtrtrust-*.whl"):
            own.unlink()  # the Dockerfile builds dtrtrust itself, from the context
        (target / ".complete").write_text("")
        self.timed("wheelhouse", started)
        return target

    def project(self, images: NodeImages) -> None:
        if images.project_archive.exists():
            return
        wheels = self.wheelhouse()
        self._ensure_in_storage(images.base_ref, images.base_archive)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="pip-", dir=self.images) as tmp:
            pip_conf = Path(tmp) / "pip.conf"
            pip_conf.write_text("[global]\nno-index = true\nfind-links = /wheelhouse\n")
            _say(f"dtrtrust: buildah bud of ./Dockerfile on {images.base_ref}")
            self.run(
                "buildah bud",
                [
                    *self.buildah,
                    "bud",
                    "--pull=never",
                    "--network=none",
                    "--format=oci",
                    f"--build-arg=PYTHON_IMAGE={images.base_ref}",
                    f"--volume={wheels}:/wheelhouse:ro",
                    f"--volume={pip_conf}:/etc/pip.conf:ro",
                    f"--tag={images.project_ref}",
                    "--file",
                    str(self.root / "Dockerfile"),
                    str(self.root),
                ],
            )
        self._export(images.project_ref, images.project_archive)
        # The archive is what the node imports: buildah's copies (and the build stages)
        # would only pile up in the cache with every change of the tree.
        repository = images.project_ref.rpartition(":")[0]
        listed = subprocess.run(
            [*self.buildah, "images", "--format", "{{.Name}}:{{.Tag}}"],
            capture_output=True,
            text=True,
            check=False,
        )
        for ref in listed.stdout.split():
            if ref.rpartition(":")[0] == repository:
                subprocess.run([*self.buildah, "rmi", ref], capture_output=True, check=False)
        subprocess.run([*self.buildah, "rmi", "--prune"], capture_output=True, check=False)
        self.timed("dtrtrust", started)

    def pause(self, images: NodeImages) -> None:
        if images.pause_archive.exists() and (images.workload_layout / "index.json").exists():
            return
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="pause-", dir=self.images) as tmp:
            binary = Path(tmp) / "pause"
            self.run(
                "gcc",
                [
                    _need("gcc"),
                    "-static",
                    "-Os",
                    "-s",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-o",
                    str(binary),
                    str(self.root / "hack/image/pause.c"),
                ],
            )
            exe = binary.read_bytes()
            layout = dtrstack.build_oci_layout(
                Path(tmp) / "pause-layout",
                images.pause_ref.rpartition(":")[2],
                files=[dtrstack.ImageFile("pause", exe, 0o755)],
                entrypoint=["/pause"],
                annotations={"io.containerd.image.name": images.pause_ref},
            )
            _tar_layout(layout, images.pause_archive)
            workload_tmp = Path(tmp) / "workload"
            dtrstack.build_oci_layout(
                workload_tmp,
                WORKLOAD_TAG,
                files=[
                    dtrstack.ImageFile("pause", exe, 0o755),
                    dtrstack.ImageFile(WORKLOAD_FILE, WORKLOAD_CONTENT),
                ],
                entrypoint=["/pause", f"/{WORKLOAD_FILE}"],
            )
            shutil.rmtree(images.workload_layout, ignore_errors=True)
            shutil.move(workload_tmp, images.workload_layout)
        self.timed("pause+workload", started)

    def _ensure_in_storage(self, ref: str, archive: Path) -> None:
        probe = subprocess.run(
            [*self.buildah, "inspect", "--type", "image", ref], capture_output=True, check=False
        )
        if probe.returncode != 0:  # a cache copied without buildah's storage: local import
            self.run("buildah pull", [*self.buildah, "pull", f"oci-archive:{archive}"])
            self.run("buildah tag", [*self.buildah, "tag", _archive_image_id(archive), ref])

    def _export(self, ref: str, archive: Path) -> None:
        tmp = archive.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        self.run("buildah push", [*self.buildah, "push", ref, f"oci-archive:{tmp}:{ref}"])
        tmp.rename(archive)


def _archive_image_id(archive: Path) -> str:
    """buildah pull of an oci-archive loses the name; the ID is the config digest."""
    import tarfile

    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].removeprefix("sha256:")
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
    return str(manifest["config"]["digest"]).removeprefix("sha256:")


def _tar_layout(layout: Path, archive: Path) -> None:
    """An OCI layout as the tar ``ctr images import`` reads (deterministic)."""
    import tarfile

    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        for path in sorted(layout.rglob("*")):
            info = tar.gettarinfo(str(path), path.relative_to(layout).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    tmp.rename(archive)


def _build_requires(root: Path) -> list[str]:
    import tomllib

    data = tomllib.loads((root / "pyproject.toml").read_text())
    return [str(r) for r in data["build-system"]["requires"]]


def _need(tool: str) -> str:
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not found:
        raise BuildError(
            f"{tool} is not installed: run `make node-deps` (hack/install-system-deps.sh --node)"
        )
    return found


def _say(message: str) -> None:
    print(f"[node-images] {message}", file=sys.stderr, flush=True)


#: How many builds of each kind stay in the cache (worktrees of one machine share it).
KEEP = 3


def prune(images_dir: Path, keep: int = KEEP) -> None:
    """Drop all but the ``keep`` newest archives and wheelhouses of each kind."""
    for pattern in ("dtrtrust-*.oci.tar", "python-base-*.oci.tar", "pause-*.oci.tar"):
        _drop_old(sorted(images_dir.glob(pattern), key=lambda p: p.stat().st_mtime), keep)
    for pattern in ("wheelhouse-*", "workload-*"):
        dirs = [p for p in images_dir.glob(pattern) if p.is_dir()]
        _drop_old(sorted(dirs, key=lambda p: p.stat().st_mtime), keep)


def _drop_old(paths: list[Path], keep: int) -> None:
    for old in paths[:-keep] if keep else paths:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def build(root: Path = ROOT, cache: Path | None = None) -> tuple[NodeImages, dict[str, float]]:
    """Build every missing image of this tree's set; returns the set and step timings."""
    cache = cache or cache_dir()
    images = planned(root, cache)
    if not images.missing():
        return images, {}
    if os.geteuid() != 0:
        raise BuildError("building the node images needs root (mmdebstrap, buildah)")
    (cache / "images").mkdir(parents=True, exist_ok=True)
    log = cache / "images" / "build.log"
    log.write_text("")  # this build's steps only
    builder = Builder(root, cache, log)
    builder.base(images)
    builder.project(images)
    builder.pause(images)
    prune(cache / "images")
    return images, builder.timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report; build nothing")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.check:
            images = planned()
            missing = images.missing()
            print(json.dumps(images.to_json() | {"missing": missing}, indent=2))
            return 1 if missing else 0
        images, timings = build()
    except BuildError as exc:
        print(f"node-images: {exc}", file=sys.stderr)
        return 1
    total = time.monotonic() - started
    _say(("built " + ", ".join(timings) if timings else "all cached") + f" in {total:.0f}s")
    print(json.dumps(images.to_json() | {"timings": timings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
