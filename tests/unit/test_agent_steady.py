"""The agent at steady state: a resync does no work for a trust whose files are as it
left them (no host lock, no file read: the stats it recorded prove it), and still
repairs a hand edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_agent import CA, CA2, DOCKER_DIR, V2_MIRRORS, V2_OK, make_agent, secret, see

from dtrtrust.agent import loop
from dtrtrust.contract import NOT_EFFECTIVE, SYNCED
from dtrtrust.node import writer


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = writer.sync_trusts

    def counting(host_root: Any, wanted: Any) -> dict[str, writer.SyncResult]:
        calls.extend(wanted)
        return real(host_root, wanted)

    monkeypatch.setattr(writer, "sync_trusts", counting)  # the module loop calls through
    return calls


def test_a_resync_with_nothing_changed_does_not_call_the_writer(
    tmp_path: Path, syncs: list[str]
) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    assert syncs == ["prod"]
    a.reconcile(everything=True)
    a.reconcile(everything=True)
    assert syncs == ["prod"]  # no lock taken, no file read for the unchanged trust


def test_a_hand_edited_file_is_still_repaired_at_resync(tmp_path: Path, syncs: list[str]) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    (tmp_path / DOCKER_DIR / "ca.crt").write_bytes(b"tampered\n")
    a.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA
    assert syncs == ["prod", "prod"]


def test_a_new_content_hash_is_written_at_once(tmp_path: Path, syncs: list[str]) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    see(a, [secret(data={"ca.crt": CA2})])  # new content, so a new content hash
    a._mark(["prod"])
    a.reconcile(everything=False)
    assert syncs == ["prod", "prod"]


def test_a_new_alias_with_the_same_content_hash_is_written(
    tmp_path: Path, syncs: list[str]
) -> None:
    """The content hash covers the data only; a new address must not be skipped."""
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    alias = secret()
    alias["metadata"]["annotations"]["dtrtrust.io/registries"] += ",10.0.0.5:4443"
    see(a, [alias])
    a._mark(["prod"])
    a.reconcile(everything=False)
    assert syncs == ["prod", "prod"]
    assert (tmp_path / "etc/docker/certs.d/10.0.0.5:4443/ca.crt").read_bytes() == CA


def test_a_runtime_config_change_is_reported_although_the_files_are_unchanged(
    tmp_path: Path, syncs: list[str]
) -> None:
    """The effective-trust findings are an input of the skip: containerd's config
    losing config_path turns a Synced trust NotEffective at the next resync."""
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text(V2_OK)
    a = make_agent(tmp_path)
    see(a, [secret(targets="docker,containerd")])
    a.reconcile(everything=True)
    assert a.reports["prod"].state == SYNCED
    (tmp_path / "etc/containerd/config.toml").write_text(V2_MIRRORS)
    a.reconcile(everything=True)
    assert a.reports["prod"].state == NOT_EFFECTIVE


def test_switching_the_probe_off_drops_its_result_although_the_files_are_unchanged(
    tmp_path: Path, syncs: list[str]
) -> None:
    import socket

    from certfactory import make_ca

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = {"ca.crt": make_ca("steady probe root").cert_pem}
    a = make_agent(tmp_path)
    address = f"127.0.0.1:{port}"
    see(a, [secret(registries=address, targets="containers", probe="600", data=files)])
    a.reconcile(everything=True)
    assert a.verified() == {"prod": False}  # probed (nothing listens on the port)
    see(a, [secret(registries=address, targets="containers", probe="off", data=files)])
    a.reconcile(everything=True)
    assert a.reports["prod"].probe is None
    assert a.verified() == {}


def test_sigterm_during_a_pass_stops_after_the_write_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_agent(tmp_path)
    see(a, [secret("one"), secret("two"), secret("three")])
    written: list[str] = []
    real = writer.sync_trusts

    def sync_then_sigterm(host_root: Any, wanted: Any) -> dict[str, writer.SyncResult]:
        written.extend(wanted)
        result = real(host_root, wanted)
        a.stop()  # SIGTERM arrives while this batch is being written
        return result

    monkeypatch.setattr(writer, "sync_trusts", sync_then_sigterm)
    monkeypatch.setattr(loop, "SYNC_BATCH", 1)  # (100 trusts per batch in the agent)
    a.reconcile(everything=True)
    assert written == ["one"]  # the batch under way finished; the other two wait
