"""`dtrtrust apply` writes the files, then real clients pull the test image using exactly those.

One pinned apply (fetch /ca + the node's kubernetes.io/tls Secret, every target) is shared by
the module; skopeo and containerd then pull through what it wrote. The files are written under
a hardened umask (077) on purpose: the fixed modes must not depend on the caller's umask.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import (
    CONDITION_TYPES,
    LOOPBACK_TARGETS,
    Host,
    cert_public_key_der,
    ctr_fetch_manifest,
    new_host,
    pinned_trust,
    public_key_der,
    sha256_fingerprints,
    skopeo_pull,
    status,
    tls_secret,
    write_manifest,
)

import dtrstack
from dtrstack import Stack, Tool

pytestmark = pytest.mark.registry

PAIR_AND_CA = {"ca.crt": 0o644, "client.cert": 0o644, "client.key": 0o600}
#: target -> file -> mode: the fixed layout of DESIGN.md.
EXPECTED_FILES = {
    "containers": PAIR_AND_CA,
    "containerd": PAIR_AND_CA | {"hosts.toml": 0o644},
    "notary": PAIR_AND_CA,
}


@dataclass(frozen=True)
class Applied:
    host: Host
    manifest: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def applied(dtr_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Applied:
    work = tmp_path_factory.mktemp("apply-pull")
    manifest = write_manifest(
        work / "trust.yaml",
        pinned_trust(dtr_stack, "dtr"),
        tls_secret(dtr_stack.client_cert, dtr_stack.client_key),
    )
    host = new_host(work)
    return Applied(host, manifest, host.apply(manifest, umask=0o077))


def test_pinned_apply_with_a_client_secret_exits_0_and_reports_every_condition_true(
    applied: Applied, dtr_stack: Stack
) -> None:
    result = applied.result
    assert result.returncode == 0, result.stdout + result.stderr

    got = status(result.stdout, "dtr")
    conds = {c["type"]: (c["status"], c["reason"]) for c in got["conditions"]}
    for kind in (*CONDITION_TYPES, "ClientCertificateValid"):
        assert conds.get(kind, ("missing",))[0] == "True", f"{kind}: {conds.get(kind)}"
    assert [c["sha256"] for c in got["bundle"]["certificates"]] == [dtr_stack.root_sha256]
    assert got["nodes"]["synced"] == got["nodes"]["desired"] == 1


@pytest.mark.parametrize("target", LOOPBACK_TARGETS)
def test_every_target_gets_exactly_the_pinned_root_and_the_node_client_pair(
    applied: Applied, dtr_stack: Stack, target: str
) -> None:
    directory = applied.host.cert_dir(target, dtr_stack.address)

    assert sorted(p.name for p in directory.iterdir()) == sorted(EXPECTED_FILES[target])
    assert sha256_fingerprints((directory / "ca.crt").read_bytes()) == {dtr_stack.root_sha256}
    written_cert = (directory / "client.cert").read_bytes()
    assert sha256_fingerprints(written_cert) == sha256_fingerprints(
        dtr_stack.client_cert.read_bytes()
    )
    assert public_key_der((directory / "client.key").read_bytes()) == cert_public_key_der(
        written_cert
    )


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def _assert_fixed_modes(host: Host, address: str, label: str) -> None:
    for target, files in EXPECTED_FILES.items():
        directory = host.cert_dir(target, address)
        for name, mode in files.items():
            got = _mode(directory / name)
            assert got == mode, f"{label}: {target} {name} is {got:o}, want {mode:o}"
        # Every directory dtrtrust created, from the address directory up to the host root.
        for parent in [directory, *directory.parents]:
            if parent == host.root:
                break
            assert _mode(parent) == 0o755, f"{label}: {parent} is {_mode(parent):o}, want 755"


def test_keys_are_0600_other_files_0644_and_directories_0755_whatever_the_umask(
    applied: Applied, dtr_stack: Stack, tmp_path: Path
) -> None:
    # skopeo and containerd read a 0644 key without complaint: only this check catches it.
    permissive = new_host(tmp_path)
    result = permissive.apply(applied.manifest, umask=0o000)
    assert result.returncode == 0, result.stderr

    _assert_fixed_modes(applied.host, dtr_stack.address, "umask 077")
    _assert_fixed_modes(permissive, dtr_stack.address, "umask 000")


def test_containerd_hosts_toml_names_our_files_relative_to_its_own_directory(
    applied: Applied, dtr_stack: Stack
) -> None:
    directory = applied.host.cert_dir("containerd", dtr_stack.address)
    hosts = tomllib.loads((directory / "hosts.toml").read_text())

    url = f"https://{dtr_stack.address}"
    assert hosts["server"] == url
    host = hosts["host"][url]
    assert host["ca"] == "ca.crt"
    assert host["client"] == [["client.cert", "client.key"]]
    assert {"pull", "resolve"} <= set(host["capabilities"])


@pytest.mark.parametrize("target", ["containers", "notary"])
def test_skopeo_pulls_the_image_with_the_cert_dir_apply_wrote(
    applied: Applied, dtr_stack: Stack, skopeo: Tool, tmp_path: Path, target: str
) -> None:
    cert_dir = applied.host.cert_dir(target, dtr_stack.address)

    result, files = skopeo_pull(skopeo, cert_dir, dtr_stack.image_ref(), tmp_path)

    assert result.returncode == 0, result.stderr
    assert files == {dtrstack.IMAGE_FILE_NAME: dtrstack.IMAGE_FILE_CONTENT}


def test_containerd_fetches_the_manifest_through_the_hosts_toml_apply_wrote(
    applied: Applied, dtr_stack: Stack, ctr: Tool
) -> None:
    result = ctr_fetch_manifest(ctr, applied.host.hosts_dir, dtr_stack.image_ref())

    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert len(manifest["layers"]) == 1


def test_second_apply_with_nothing_changed_writes_nothing(applied: Applied) -> None:
    before = applied.host.node_files()
    assert before, "the first apply wrote no files"

    again = applied.host.apply(applied.manifest, umask=0o077)

    assert again.returncode == 0, again.stderr
    after = applied.host.node_files()
    assert after.keys() == before.keys()
    for path, state in before.items():
        assert after[path] == state, f"{path} was rewritten: {state} -> {after[path]}"


def test_docker_target_on_a_loopback_registry_is_not_effective_and_apply_exits_1(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    # The seed guide's pitfall: dockerd never reads certs.d for 127.0.0.0/8 registries.
    manifest = write_manifest(
        tmp_path / "trust.yaml",
        pinned_trust(dtr_stack, "dtr", targets=["docker"]),
        tls_secret(dtr_stack.client_cert, dtr_stack.client_key),
    )
    host = new_host(tmp_path)
    result = host.apply(manifest)
    assert result.returncode == 1, result.stdout + result.stderr
    conds = {c["type"]: c for c in status(result.stdout, "dtr")["conditions"]}
    assert conds["NodesSynced"]["reason"] == "NotEffective"
    assert "insecure registry" in conds["NodesSynced"]["message"]
    assert (host.cert_dir("docker", dtr_stack.address) / "client.cert").is_file()
