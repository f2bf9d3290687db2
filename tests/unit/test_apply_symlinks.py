"""Symbolic links planted where `dtrtrust apply` writes: never followed, on the real writer.

Each case plants a link to a directory or file outside the host root and runs apply;
nothing outside may change, whatever apply then reports. A refused path is a host
problem: exit 3 with one line naming the link.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import certfactory
from dtrtrust.cli import EXIT_HOST, apply, main
from dtrtrust.node import writer
from stubnet import StubNetwork

ROOT = certfactory.make_ca("Symlink Root")
ADDR = "dtr.example.com:4443"
STATE = apply.state_dir()  # var/lib/dtrtrust/apply
BAIT = b"the attacker's target: must stay exactly this\n"


def manifest(tmp_path: Path) -> Path:
    doc = {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": "dtr"},
        "spec": {
            "registry": ADDR,
            "ca": {"pem": ROOT.cert_pem.decode()},
            "verify": {"tls": False, "nodes": False},
        },
    }
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the host root with one file in it."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "target").write_bytes(BAIT)
    return d


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def plant(root: Path, rel: str, target: Path) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, root / rel)


# (where the link is planted, whether it points at the outside directory or its file)
CASES = [
    (writer.STATE_DIR, "dir"),
    (STATE, "dir"),
    (f"{STATE}/dtr.json", "file"),
    (f"{STATE}/.dtr.json.dtrtrust-new", "file"),
    (f"{STATE}/dtr.tmp", "file"),  # the temp name of earlier versions
]


@pytest.mark.parametrize(("rel", "kind"), CASES)
def test_a_planted_link_in_apply_state_is_never_followed(
    tmp_path: Path, outside: Path, rel: str, kind: str
) -> None:
    root = tmp_path / "host"
    root.mkdir()
    plant(root, rel, outside if kind == "dir" else outside / "target")
    before = snapshot(outside)
    opts = apply.HostOptions(host_root=root, home="/root")
    refused = ""
    try:
        apply.apply_all(
            apply.load_manifests([str(manifest(tmp_path))]),
            opts,
            now=certfactory.NOW,
            network=StubNetwork(ROOT),
        )
    except apply.HostError as exc:
        refused = str(exc)
    assert not refused or "symbolic link" in refused
    assert snapshot(outside) == before
    assert list(outside.iterdir()) == [outside / "target"]


@pytest.mark.parametrize(("rel", "kind"), CASES)
def test_delete_with_a_planted_link_never_follows_it(
    tmp_path: Path, outside: Path, rel: str, kind: str
) -> None:
    root = tmp_path / "host"
    root.mkdir()
    plant(root, rel, outside if kind == "dir" else outside / "target")
    before = snapshot(outside)
    opts = apply.HostOptions(host_root=root, home="/root")
    refused = ""
    try:
        apply.delete_all(apply.load_manifests([str(manifest(tmp_path))]), opts)
    except apply.HostError as exc:
        refused = str(exc)
    assert not refused or "symbolic link" in refused
    assert snapshot(outside) == before


def test_a_linked_state_directory_exits_3_with_one_line(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "host"
    root.mkdir()
    plant(root, STATE, outside)
    code = main(["apply", "-f", str(manifest(tmp_path)), "--host-root", str(root)])
    err = capsys.readouterr().err
    assert code == EXIT_HOST
    summary = [line for line in err.splitlines() if line.startswith("dtrtrust: ")]
    assert len(summary) == 1
    assert "symbolic link" in summary[0]
    assert list(outside.iterdir()) == [outside / "target"]


def test_state_in_the_legacy_location_is_moved_before_apply_reads_it(tmp_path: Path) -> None:
    root = tmp_path / "host"
    root.mkdir()
    legacy = root / ".dtrtrust/apply"
    legacy.mkdir(parents=True)
    (legacy / "dtr.json").write_text('{"bundlePEM": "kept"}\n')
    (legacy / "other.json").write_text('{"bundlePEM": "other"}\n')
    opts = apply.HostOptions(host_root=root, home="/root")
    apply.migrate_state(opts)
    assert apply._load_state(opts, "dtr") == {"bundlePEM": "kept"}
    assert apply._load_state(opts, "other") == {"bundlePEM": "other"}
    assert not legacy.exists()
    moved = root / writer.STATE_DIR / "apply/dtr.json"
    assert json.loads(moved.read_text()) == {"bundlePEM": "kept"}
    assert moved.stat().st_mode & 0o777 == 0o600
    assert (root / writer.STATE_DIR / "apply").stat().st_mode & 0o777 == 0o700


def test_a_real_apply_after_an_upgrade_keeps_the_previous_state_and_one_location(
    tmp_path: Path,
) -> None:
    root = tmp_path / "host"
    root.mkdir()
    opts = apply.HostOptions(host_root=root, home="/root")
    path = manifest(tmp_path)
    first = apply.apply_all(
        apply.load_manifests([str(path)]), opts, now=certfactory.NOW, network=StubNetwork(ROOT)
    )[0]
    assert first.ready
    # What an older version left: its state under .dtrtrust/apply, none in the new place.
    current = root / writer.STATE_DIR / "apply/dtr.json"
    legacy = root / ".dtrtrust/apply/dtr.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(current.read_bytes())
    current.unlink()
    again = apply.apply_all(
        apply.load_manifests([str(path)]), opts, now=certfactory.NOW, network=StubNetwork(ROOT)
    )[0]
    assert again.ready
    ready = [c for c in again.status["conditions"] if c["type"] == "Ready"]
    first_ready = [c for c in first.status["conditions"] if c["type"] == "Ready"]
    assert ready == first_ready  # the transition time survived the move
    assert not (root / ".dtrtrust").exists()


NODE_LINKS = [
    "etc",
    "etc/docker",
    "etc/docker/certs.d",
    f"etc/docker/certs.d/{ADDR}",
    f"etc/docker/certs.d/{ADDR}/ca.crt",
    f"etc/containers/certs.d/{ADDR}",
    f"etc/containerd/certs.d/{ADDR}/hosts.toml",
    f"etc/containerd/certs.d/{ADDR}/ca.crt",
    "root/.docker",
    f"root/.docker/tls/{ADDR}",
]


@pytest.mark.parametrize("rel", NODE_LINKS)
def test_a_planted_link_anywhere_in_the_node_paths_is_refused_and_never_followed(
    tmp_path: Path, outside: Path, rel: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "host"
    root.mkdir()
    is_file = rel.rsplit("/", 1)[-1] in ("ca.crt", "client.cert", "client.key", "hosts.toml")
    plant(root, rel, outside / "target" if is_file else outside)
    before = snapshot(outside)
    doc = yaml.safe_load(manifest(tmp_path).read_text())
    doc["spec"]["targets"] = ["docker", "containers", "containerd", "notary"]
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = main(["apply", "-f", str(path), "--host-root", str(root), "--home", "/root"])
    err = capsys.readouterr().err
    if not is_file or code != 0:
        # A link in place of a directory is refused; one in place of a file may also be
        # set aside like any foreign file (and put back on delete) -- never followed.
        assert code == EXIT_HOST, err
        assert "symbolic link" in err
    else:
        assert not (root / rel).is_symlink()
    assert snapshot(outside) == before
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
