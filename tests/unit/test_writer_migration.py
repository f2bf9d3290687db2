"""Upgrading from the RENAME_EXCHANGE writer: its version-1 record in ``.dtrtrust`` (as
``dtrtrust apply`` left it on a host) or in the state directory itself (as the agent's pod
left it in the host's /var/lib/dtrtrust) becomes the record in var/lib/dtrtrust, and no
backup of a foreign file is lost on the way."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from dtrtrust.core.layout import DesiredDir, desired_dirs
from dtrtrust.node import writer
from dtrtrust.node.writer import owned_trusts, remove_trust, sync_trust

CA = b"-----BEGIN CERTIFICATE-----\nCA one\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"
ADMIN_CA = b"the admin's own CA\n"
ADDR = "registry.test:5443"
ROOT = "etc/docker/certs.d"
DOCKER = f"{ROOT}/{ADDR}"
RECORD = f"{writer.STATE_DIR}/state.json"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sid(rel: str) -> str:
    return hashlib.sha256(rel.encode()).hexdigest()[:24]


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    return root


def old_layout(host: Path, *, work: str, state: str, staging_ino: int | None = None) -> Path:
    """What the version-1 writer left: our three files in DOCKER, the admin's ca.crt
    kept as a hard-linked backup in ``work``/backup, its record in ``state``."""
    live = host / DOCKER
    live.mkdir(parents=True)
    backup = host / work / "backup" / f"{sid(DOCKER)}.ca.crt"
    backup.parent.mkdir(parents=True)
    (host / work / "staging").mkdir()
    (host / work / "old" / sid(DOCKER)).mkdir(parents=True)
    (host / work / "old" / sid(DOCKER) / "ca.crt").write_bytes(b"previous generation")
    backup.write_bytes(ADMIN_CA)
    backup.chmod(0o640)
    for name, data in (("ca.crt", CA), ("client.cert", CERT), ("client.key", KEY)):
        (live / name).write_bytes(data)
        (live / name).chmod(0o600 if name == "client.key" else 0o644)
    record: dict[str, Any] = {
        "version": 1,
        "dirs": {
            DOCKER: {
                "trust": "prod",
                "target": "docker",
                "root": ROOT,
                "address": ADDR,
                "created": False,
                "work": work.replace(writer.STATE_DIR, ".dtrtrust"),
                "files": {
                    "ca.crt": {
                        "hashes": [sha(CA)],
                        "backup": f"{work.replace(writer.STATE_DIR, '.dtrtrust')}/backup/"
                        f"{sid(DOCKER)}.ca.crt",
                    },
                    "client.cert": {"hashes": [sha(CERT)], "backup": None},
                    "client.key": {"hashes": [sha(KEY)], "backup": None},
                },
                "staging_ino": staging_ino,
            }
        },
        "created": [],
        "orphaned_backups": [],
    }
    (host / state).mkdir(parents=True, exist_ok=True)
    (host / state / "state.json").write_text(json.dumps(record))
    return backup


def dirs() -> list[DesiredDir]:
    return desired_dirs([ADDR], ["docker"], CA, (CERT, KEY))


def check_migrated_and_restorable(host: Path, backup_ino: int) -> None:
    data = json.loads((host / RECORD).read_text())
    assert data["version"] == 2
    moved = data["dirs"][DOCKER]["files"]["ca.crt"]["backup"]
    assert moved == f"{ROOT}/{writer.BACKUP_DIR}/{ADDR}.ca.crt"
    assert (host / moved).stat().st_ino == backup_ino  # the very same inode
    assert remove_trust(host, "prod").ok
    restored = host / DOCKER / "ca.crt"
    assert restored.read_bytes() == ADMIN_CA
    assert restored.stat().st_ino == backup_ino
    assert sorted(os.listdir(host / DOCKER)) == ["ca.crt"]
    assert not (host / ROOT / writer.BACKUP_DIR).exists()


def test_apply_state_in_dot_dtrtrust_moves_to_var_lib_dtrtrust(host: Path) -> None:
    backup = old_layout(host, work=".dtrtrust/work", state=".dtrtrust")
    ino = backup.stat().st_ino
    (host / ".dtrtrust/agent.json").write_text('{"version": 1, "policies": {}}')
    (host / ".dtrtrust/apply").mkdir()
    (host / ".dtrtrust/apply/prod.json").write_text("{}")
    assert owned_trusts(host) == {"prod"}  # read before any migration

    result = sync_trust(host, "prod", dirs())
    assert [d.action for d in result.dirs] == ["unchanged"]
    assert not (host / ".dtrtrust").exists()
    assert (host / writer.STATE_DIR / "agent.json").is_file()
    assert (host / writer.STATE_DIR / "apply/prod.json").read_text() == "{}"
    assert owned_trusts(host) == {"prod"}
    check_migrated_and_restorable(host, ino)


def test_agent_state_already_in_var_lib_dtrtrust_is_converted_in_place(host: Path) -> None:
    # The pod mounted the host's /var/lib/dtrtrust at <host root>/.dtrtrust, and its
    # target roots were other mounts, so it worked in <target root>/.dtrtrust-work.
    backup = old_layout(host, work=f"{ROOT}/.dtrtrust-work", state=writer.STATE_DIR)
    ino = backup.stat().st_ino
    assert owned_trusts(host) == {"prod"}
    assert sync_trust(host, "prod", dirs()).ok
    assert not (host / ROOT / ".dtrtrust-work").exists()
    check_migrated_and_restorable(host, ino)


def test_legacy_paths_inside_the_state_directory_are_resolved_where_it_now_is(
    host: Path,
) -> None:
    # Recorded as ".dtrtrust/work" by the pod: that is <host root>/var/lib/dtrtrust/work now.
    backup = old_layout(host, work=f"{writer.STATE_DIR}/work", state=writer.STATE_DIR)
    ino = backup.stat().st_ino
    assert sync_trust(host, "prod", dirs()).ok
    assert not (host / writer.STATE_DIR / "work").exists()
    check_migrated_and_restorable(host, ino)


def test_both_records_on_one_host_are_merged(host: Path) -> None:
    assert sync_trust(host, "agent-trust", desired_dirs(["a.test"], ["docker"], CA, None)).ok
    backup = old_layout(host, work=".dtrtrust/work", state=".dtrtrust")
    ino = backup.stat().st_ino
    assert owned_trusts(host) == {"agent-trust", "prod"}
    assert remove_trust(host, "agent-trust").ok  # any call migrates first
    assert owned_trusts(host) == {"prod"}
    check_migrated_and_restorable(host, ino)


def test_an_interrupted_swap_of_the_old_writer_gives_back_late_foreign_files(
    host: Path,
) -> None:
    old_layout(host, work=".dtrtrust/work", state=".dtrtrust", staging_ino=1)
    # Swapped: the staging path holds the previous generation, with a file someone
    # wrote just before the swap.
    previous = host / ".dtrtrust/work/staging" / sid(DOCKER)
    previous.mkdir()
    (previous / "ca.crt").write_bytes(b"old generation")
    (previous / "late.txt").write_bytes(b"appeared")
    assert sync_trust(host, "prod", dirs()).ok
    assert (host / DOCKER / "late.txt").read_bytes() == b"appeared"
    assert (host / DOCKER / "ca.crt").read_bytes() == CA
    assert not (host / ".dtrtrust").exists()


def test_a_backup_that_cannot_be_placed_stays_where_it_is(host: Path) -> None:
    backup = old_layout(host, work=".dtrtrust/work", state=".dtrtrust")
    (host / ".dtrtrust/work/backup/unknown.ca.crt").write_bytes(b"not in any record")
    assert sync_trust(host, "prod", dirs()).ok
    # Unreferenced, so not ours to judge: kept, with its directory.
    assert (host / ".dtrtrust/work/backup/unknown.ca.crt").read_bytes() == b"not in any record"
    assert not backup.exists()  # the referenced one moved
