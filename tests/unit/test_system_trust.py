"""``apply --system-trust``: the OS trust store, owned exactly, on a real host root.

Debian/Ubuntu and RHEL/Fedora layouts are told apart by the directory the distribution's
ca-certificates package creates; the update command is a real executable (a script the
test writes) where its failure or absence is the behaviour under test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

import certfactory
from dtrtrust.cli import apply
from dtrtrust.node import systemtrust
from stubnet import StubNetwork

NOW = certfactory.NOW
ROOT = certfactory.make_ca("System Trust Root")
INTER = certfactory.make_ca("System Trust Issuing", parent=ROOT, path_length=0)
ADDR = "dtr.example.com:4443"
DEBIAN = "usr/local/share/ca-certificates"
RHEL = "etc/pki/ca-trust/source/anchors"


def manifest(tmp_path: Path, name: str = "dtr", registry: str = ADDR) -> Path:
    doc = {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": name},
        "spec": {
            "registry": registry,
            "ca": {"fetch": {"pinnedSHA256": [ROOT.fingerprint]}, "pem": INTER.cert_pem.decode()},
            "verify": {"nodes": False},  # the node probe is tested in test_apply.py
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def host(tmp_path: Path, store: str | None = DEBIAN, **kw: Any) -> apply.HostOptions:
    root = tmp_path / "host"
    root.mkdir(exist_ok=True)
    if store:
        (root / store).mkdir(parents=True, exist_ok=True)
    return apply.HostOptions(host_root=root, home="/root", system_trust=True, **kw)


def run(path: Path, opts: apply.HostOptions) -> apply.TrustResult:
    [result] = apply.apply_all(
        apply.load_manifests([str(path)]), opts, now=NOW, network=StubNetwork(ROOT)
    )
    return result


def nodes_synced(result: apply.TrustResult) -> tuple[str, str, str]:
    c = next(c for c in result.status["conditions"] if c["type"] == "NodesSynced")
    return c["status"], c["reason"], c["message"]


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "update-store"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return [str(path)]


def store_files(opts: apply.HostOptions, store: str = DEBIAN) -> dict[str, bytes]:
    d = opts.host_root / store
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.is_dir() else {}


@pytest.mark.parametrize(("store", "label"), [(DEBIAN, "Debian/Ubuntu"), (RHEL, "RHEL/Fedora")])
def test_one_file_per_ca_named_by_fingerprint_in_the_hosts_store_and_in_the_status(
    tmp_path: Path, store: str, label: str
) -> None:
    opts = host(tmp_path, store)
    result = run(manifest(tmp_path), opts)
    assert result.ready, nodes_synced(result)
    files = store_files(opts, store)
    assert sorted(files) == sorted(
        systemtrust.file_name("dtr", c.fingerprint) for c in (ROOT, INTER)
    )
    assert set(files.values()) == {ROOT.cert_pem, INTER.cert_pem}
    assert all((opts.host_root / store / n).stat().st_mode & 0o777 == 0o644 for n in files)
    reported = result.status["systemTrust"]
    assert reported["store"] == label
    assert reported["files"] == sorted(f"{store}/{n}" for n in files)
    assert "run update-ca" in reported["message"]  # not the host's /: the admin runs it


def test_an_unsupported_host_is_named_and_not_ready_and_nothing_is_created(
    tmp_path: Path,
) -> None:
    opts = host(tmp_path, store=None)
    result = run(manifest(tmp_path), opts)
    status, reason, message = nodes_synced(result)
    assert (status, reason) == ("False", "NotEffective")
    assert "no supported OS trust store" in message
    assert "Debian/Ubuntu" in message
    assert "RHEL/Fedora" in message
    assert not (opts.host_root / "usr").exists()
    assert not (opts.host_root / "etc/pki").exists()


def test_deleting_one_trust_leaves_the_files_of_a_trust_whose_name_it_prefixes(
    tmp_path: Path,
) -> None:
    opts = host(tmp_path)
    assert run(manifest(tmp_path, "dtr-prod", "prod.example.com"), opts).ready
    prod = store_files(opts)
    assert run(manifest(tmp_path, "dtr"), opts).ready
    apply.delete_all(apply.load_manifests([str(manifest(tmp_path, "dtr"))]), opts)
    assert store_files(opts) == prod


def test_a_plain_delete_removes_the_os_store_files_and_lists_them(tmp_path: Path) -> None:
    opts = host(tmp_path)
    path = manifest(tmp_path)
    assert run(path, opts).ready
    written = sorted(f"{DEBIAN}/{n}" for n in store_files(opts))
    plain = apply.HostOptions(host_root=opts.host_root, home="/root")  # no --system-trust
    done = apply.delete_all(apply.load_manifests([str(path)]), plain)
    assert store_files(opts) == {}
    assert sorted(r.path for r in done if r.path.startswith(DEBIAN)) == written
    assert all(r.action == "removed" for r in done if r.path.startswith(DEBIAN))


def test_a_failing_update_command_is_not_effective_and_retried_next_run(tmp_path: Path) -> None:
    failing = script(tmp_path, "echo 'E: cannot rebuild /etc/ssl/certs' >&2; exit 1")
    opts = host(tmp_path, system_trust_command=failing)
    result = run(manifest(tmp_path), opts)
    status, reason, message = nodes_synced(result)
    assert (status, reason) == ("False", "NotEffective")
    assert "failed (exit 1): E: cannot rebuild /etc/ssl/certs" in message
    assert result.status["systemTrust"]["updated"] is False

    marker = tmp_path / "ran"
    opts.system_trust_command = script(tmp_path, f"touch {marker}")
    again = run(manifest(tmp_path), opts)  # nothing changed, but the update is pending
    assert marker.exists()
    assert again.ready, nodes_synced(again)
    assert again.status["systemTrust"]["updated"] is True


def test_a_missing_update_command_is_not_effective(tmp_path: Path) -> None:
    opts = host(tmp_path, system_trust_command=[str(tmp_path / "no-such-update-ca-certificates")])
    status, reason, message = nodes_synced(run(manifest(tmp_path), opts))
    assert (status, reason) == ("False", "NotEffective")
    assert "is not installed" in message


def test_a_foreign_file_with_our_name_is_left_alone_and_reported(tmp_path: Path) -> None:
    opts = host(tmp_path)
    name = systemtrust.file_name("dtr", ROOT.fingerprint)
    foreign = opts.host_root / DEBIAN / name
    foreign.write_bytes(b"someone else's file\n")
    status, reason, message = nodes_synced(run(manifest(tmp_path), opts))
    assert (status, reason) == ("False", "NotEffective")
    assert "was not written by dtrtrust" in message
    assert foreign.read_bytes() == b"someone else's file\n"


def test_a_symlinked_store_directory_is_refused_and_nothing_is_written_through_it(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    opts = host(tmp_path, store=None)
    (opts.host_root / "usr/local/share").mkdir(parents=True)
    os.symlink(outside, opts.host_root / DEBIAN)
    with pytest.raises(apply.HostError, match="symbolic link"):
        run(manifest(tmp_path), opts)
    assert list(outside.iterdir()) == []
