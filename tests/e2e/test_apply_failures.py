"""What goes wrong, seen with real clients: `dtrtrust apply` must say why and never break a node.

Every failure here must exit 1 with the failing condition's reason, leave the files of the last
good apply exactly as they were (bytes, inode, mtime), echo no key and show no traceback
(``run_dtrtrust`` checks the last on every call).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    FORBIDDEN,
    LOOPBACK_TARGETS,
    UNKNOWN_AUTHORITY,
    Host,
    condition,
    conditions,
    ctr_fetch_manifest,
    fingerprint,
    new_host,
    pinned_trust,
    sha256_fingerprints,
    skopeo_inspect,
    skopeo_pull,
    tls_secret,
    write_manifest,
)

import dtrstack
from dtrstack import Stack, Tool

pytestmark = pytest.mark.registry


def _client_secret(stack: Stack) -> dict[str, Any]:
    return tls_secret(stack.client_cert, stack.client_key)


def _good_apply(stack: Stack, host: Host, work: Path, name: str = "dtr") -> Path:
    """A pinned apply that must succeed: the 'last good' state the failures must keep."""
    manifest = write_manifest(work / "good.yaml", pinned_trust(stack, name), _client_secret(stack))
    result = host.apply(manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    return manifest


def _assert_failed(result: subprocess.CompletedProcess[str], kind: str, reason: str) -> str:
    """Exit 1, ``kind`` False with ``reason``, Ready False with the same reason; the message."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert condition(result.stdout, kind) == ("False", reason)
    assert condition(result.stdout, "Ready") == ("False", reason)
    assert reason in result.stderr  # the one-line summary on stderr
    message: str = conditions(result.stdout)[kind]["message"]
    return message


def test_without_a_client_pair_no_client_files_are_written_and_skopeo_gets_403(
    dtr_stack: Stack, skopeo: Tool, tmp_path: Path
) -> None:
    host = new_host(tmp_path)
    manifest = write_manifest(tmp_path / "t.yaml", pinned_trust(dtr_stack, "dtr", client=False))

    result = host.apply(manifest)

    # Observed: with no clientCertificate in the spec there is nothing to probe /basic_info with,
    # so RegistryVerified checks the chain only and apply is Ready, although this registry
    # refuses every anonymous pull. ClientCertificateValid is absent, as DESIGN.md says.
    assert result.returncode == 0, result.stderr
    conds = conditions(result.stdout)
    assert "ClientCertificateValid" not in conds
    assert (conds["RegistryVerified"]["status"], conds["Ready"]["status"]) == ("True", "True")
    for target in LOOPBACK_TARGETS:
        names = {p.name for p in host.cert_dir(target, dtr_stack.address).iterdir()}
        assert names == ({"ca.crt", "hosts.toml"} if target == "containerd" else {"ca.crt"})
    pulled = skopeo_inspect(
        skopeo, host.cert_dir("containers", dtr_stack.address), dtr_stack.image_ref()
    )
    assert pulled.returncode != 0
    assert FORBIDDEN in pulled.stderr


def test_rogue_client_certificate_is_client_auth_rejected_and_previous_files_stay(
    dtr_stack: Stack, skopeo: Tool, tmp_path: Path
) -> None:
    host = new_host(tmp_path)
    _good_apply(dtr_stack, host, tmp_path)
    before = host.node_files()
    rogue = write_manifest(
        tmp_path / "rogue.yaml",
        pinned_trust(dtr_stack, "dtr"),
        tls_secret(dtr_stack.rogue_cert, dtr_stack.rogue_key),
    )

    result = host.apply(rogue)

    _assert_failed(result, "RegistryVerified", "ClientAuthRejected")
    assert dtr_stack.rogue_key.read_text().splitlines()[1] not in result.stdout + result.stderr
    assert host.node_files() == before
    pulled = skopeo_inspect(
        skopeo, host.cert_dir("containers", dtr_stack.address), dtr_stack.image_ref()
    )
    assert pulled.returncode == 0, pulled.stderr


def test_leaf_only_registry_with_a_root_only_bundle_is_unknown_authority_and_writes_nothing(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    host = new_host(tmp_path)
    manifest = write_manifest(
        tmp_path / "t.yaml",
        pinned_trust(dtr_stack, "dtr-b", dtr_stack.leaf_only_address),
        _client_secret(dtr_stack),
    )

    result = host.apply(manifest)

    message = _assert_failed(result, "RegistryVerified", "UnknownAuthority")
    assert "intermediate" in message
    assert host.node_files() == {}


def test_leaf_only_registry_pulls_only_once_the_bundle_holds_inline_intermediate_and_fetched_root(
    dtr_stack: Stack, skopeo: Tool, ctr: Tool, tmp_path: Path
) -> None:
    host = new_host(tmp_path)
    address = dtr_stack.leaf_only_address
    ref = dtr_stack.image_ref(address)
    cert_dir = host.cert_dir("containers", address)

    # 1. The check before publishing off: the root-only files get written, a real client
    #    refuses the registry, and the probe with exactly those files says so (exit 1).
    unchecked = write_manifest(
        tmp_path / "unchecked.yaml",
        pinned_trust(dtr_stack, "dtr-b", address, verify={"tls": False}),
        _client_secret(dtr_stack),
    )
    result = host.apply(unchecked)
    assert result.returncode == 1, result.stdout + result.stderr
    assert condition(result.stdout, "NodesVerified") == ("False", "UnknownAuthority")
    assert sha256_fingerprints((cert_dir / "ca.crt").read_bytes()) == {dtr_stack.root_sha256}
    refused = skopeo_inspect(skopeo, cert_dir, ref)
    assert refused.returncode != 0
    assert UNKNOWN_AUTHORITY in refused.stderr

    # 2. The organisation's intermediate inline + the fetched /ca: Ready, and the pull works.
    composed = write_manifest(
        tmp_path / "composed.yaml",
        pinned_trust(dtr_stack, "dtr-b", address, pem=dtr_stack.intermediate_ca.read_text()),
        _client_secret(dtr_stack),
    )
    result = host.apply(composed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert condition(result.stdout, "RegistryVerified") == ("True", "Verified")
    assert sha256_fingerprints((cert_dir / "ca.crt").read_bytes()) == {
        dtr_stack.root_sha256,
        fingerprint(dtr_stack.intermediate_ca),
    }
    pulled, files = skopeo_pull(skopeo, cert_dir, ref, tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert files == {dtrstack.IMAGE_FILE_NAME: dtrstack.IMAGE_FILE_CONTENT}
    fetched = ctr_fetch_manifest(ctr, host.hosts_dir, ref)
    assert fetched.returncode == 0, fetched.stderr


def test_wrong_pin_after_a_good_apply_is_fingerprint_mismatch_naming_the_served_fingerprint(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    host = new_host(tmp_path)
    _good_apply(dtr_stack, host, tmp_path)
    before = host.node_files()
    wrong = write_manifest(
        tmp_path / "wrong.yaml",
        pinned_trust(dtr_stack, "dtr", pins=["sha256:" + "ab" * 32]),
        _client_secret(dtr_stack),
    )

    result = host.apply(wrong)

    message = _assert_failed(result, "CAAvailable", "FingerprintMismatch")
    assert dtr_stack.root_sha256 in message
    assert host.node_files() == before  # bytes, mode, inode and mtime_ns


def test_unpinned_fetch_without_insecure_skip_pinning_is_refused_and_writes_nothing(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    host = new_host(tmp_path)
    manifest = write_manifest(
        tmp_path / "t.yaml", pinned_trust(dtr_stack, "dtr", pins=None), _client_secret(dtr_stack)
    )

    result = host.apply(manifest)

    message = _assert_failed(result, "CAAvailable", "Unpinned")
    assert dtr_stack.root_sha256 in message  # what to check out of band, then pin
    assert host.node_files() == {}


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_registry_outage_is_fetch_failed_and_keeps_the_working_files(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    # A registry of our own, so stopping it does not disturb the others (dtr_stack only makes
    # sure the binaries are there, or skips / fails with the reason).
    with dtrstack.running(tmp_path / "stack") as own:
        host = new_host(tmp_path)
        manifest = _good_apply(own, host, tmp_path)
        before = host.node_files()
    # ... stopped: the next apply cannot fetch /ca.

    result = host.apply(manifest)

    message = _assert_failed(result, "CAAvailable", "FetchFailed")
    assert own.address in message
    assert host.node_files() == before


def test_unreachable_ca_url_is_fetch_failed_and_keeps_the_working_files(
    dtr_stack: Stack, skopeo: Tool, tmp_path: Path
) -> None:
    host = new_host(tmp_path)
    _good_apply(dtr_stack, host, tmp_path)
    before = host.node_files()
    url = f"https://127.0.0.1:{_unused_port()}/ca"
    broken = write_manifest(
        tmp_path / "t.yaml",
        pinned_trust(dtr_stack, "dtr", fetch_url=url),
        _client_secret(dtr_stack),
    )

    result = host.apply(broken)

    message = _assert_failed(result, "CAAvailable", "FetchFailed")
    assert url in message
    assert host.node_files() == before
    pulled = skopeo_inspect(
        skopeo, host.cert_dir("containers", dtr_stack.address), dtr_stack.image_ref()
    )
    assert pulled.returncode == 0, pulled.stderr


def _truncated(stack: Stack) -> str:
    return "".join(stack.root_ca.read_text().splitlines(keepends=True)[:4])


def _root_and_key(stack: Stack) -> str:
    return stack.root_ca.read_text() + stack.client_key.read_text()


@pytest.mark.parametrize(
    "bad_pem", [_truncated, _root_and_key], ids=["truncated certificate", "private key pasted"]
)
def test_bad_pem_in_ca_pem_is_invalid_pem_writes_nothing_and_never_echoes_the_key(
    dtr_stack: Stack, tmp_path: Path, bad_pem: Callable[[Stack], str]
) -> None:
    host = new_host(tmp_path)
    manifest = write_manifest(
        tmp_path / "t.yaml",
        pinned_trust(dtr_stack, "dtr", pem=bad_pem(dtr_stack)),
        _client_secret(dtr_stack),
    )

    result = host.apply(manifest)

    _assert_failed(result, "BundleValid", "InvalidPEM")
    output = result.stdout + result.stderr
    key_body = [ln for ln in dtr_stack.client_key.read_text().splitlines() if "-----" not in ln]
    assert key_body
    for line in key_body:
        assert line not in output
    assert host.node_files() == {}


def test_delete_removes_what_apply_wrote_and_restores_a_foreign_ca_crt(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    host = new_host(tmp_path)
    cert_dir = host.cert_dir("containers", dtr_stack.address)
    cert_dir.mkdir(parents=True)
    foreign = cert_dir / "ca.crt"
    foreign.write_bytes(dtr_stack.rogue_ca.read_bytes())  # someone's earlier hand-made trust
    foreign.chmod(0o640)
    foreign_mode = 0o640
    manifest = _good_apply(dtr_stack, host, tmp_path)
    assert sha256_fingerprints(foreign.read_bytes()) == {dtr_stack.root_sha256}

    result = host.delete(manifest)

    assert result.returncode == 0, result.stderr
    assert list(host.node_files()) == [str(foreign.relative_to(host.root))]
    assert f"restored {foreign.relative_to(host.root)}\n" in result.stdout
    assert f"removed {foreign.relative_to(host.root)}\n" not in result.stdout
    assert "path(s) removed, 1 restored" in result.stdout
    assert foreign.read_bytes() == dtr_stack.rogue_ca.read_bytes()
    assert foreign.stat().st_mode & 0o7777 == foreign_mode
    for target in ("containerd", "notary"):  # containers holds the restored foreign file
        assert not host.cert_dir(target, dtr_stack.address).exists()


def test_an_alias_the_registry_certificate_does_not_name_is_refused_before_any_write(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    host = new_host(tmp_path)
    port = dtr_stack.port
    good = pinned_trust(dtr_stack, "alias-ok")
    good["spec"]["aliases"] = [f"localhost:{port}"]
    result = host.apply(write_manifest(tmp_path / "ok.yaml", good, _client_secret(dtr_stack)))
    assert result.returncode == 0, result.stderr
    assert (host.cert_dir("containers", f"localhost:{port}") / "ca.crt").exists()

    bad = pinned_trust(dtr_stack, "alias-bad")
    bad["spec"]["aliases"] = [f"dtr.invalid:{port}"]
    result = host.apply(write_manifest(tmp_path / "bad.yaml", bad, _client_secret(dtr_stack)))
    assert result.returncode == 1
    assert condition(result.stdout, "RegistryVerified") == ("False", "HostnameMismatch")
    assert f"dtr.invalid:{port}" in conditions(result.stdout)["RegistryVerified"]["message"]
    assert not host.cert_dir("containers", f"dtr.invalid:{port}").exists()
