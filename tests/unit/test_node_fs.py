"""dtrtrust.node.fs: the no-follow helpers every module uses for a file under a host root,
and the writer's own state (record, lock, temp files, backups) refusing planted links."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtrtrust.core.layout import DesiredDir, desired_dirs
from dtrtrust.node import fs, writer
from dtrtrust.node.errors import WriterError
from dtrtrust.node.writer import remove_trust, sync_trust

CA = b"-----BEGIN CERTIFICATE-----\nCA one\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"
ADDR = "registry.test:5443"
DOCKER = f"etc/docker/certs.d/{ADDR}"
STATE = writer.STATE_DIR


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    return root


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    other = tmp_path / "elsewhere"
    other.mkdir()
    return other


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def dirs() -> list[DesiredDir]:
    return desired_dirs([ADDR], ["docker"], CA, (CERT, KEY))


def victim(elsewhere: Path) -> Path:
    target = elsewhere / "victim"
    target.write_bytes(b"not yours")
    return target


# ------------------------------------------------------------------ public helpers


def test_write_file_creates_parents_and_sets_exact_modes_whatever_the_umask(
    host: Path, umask_077: None
) -> None:
    assert fs.write_file(host, "usr/local/share/ca-certificates/x.crt", CA, 0o644)
    path = host / "usr/local/share/ca-certificates/x.crt"
    assert path.read_bytes() == CA
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert os.listdir(path.parent) == ["x.crt"]  # no temp file left


def test_write_file_with_equal_content_writes_nothing(host: Path) -> None:
    fs.write_file(host, "a/b.json", b"{}", 0o600)
    before = (host / "a/b.json").stat()
    assert fs.write_file(host, "a/b.json", b"{}", 0o600) is False
    after = (host / "a/b.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert fs.write_file(host, "a/b.json", b"{}", 0o644) is True  # a mode change is a write


@pytest.mark.parametrize("link", ["a", "a/b"])
def test_write_file_refuses_a_symlinked_directory_on_the_way(
    host: Path, elsewhere: Path, link: str
) -> None:
    (host / link).parent.mkdir(parents=True, exist_ok=True)
    (host / link).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(WriterError, match=f"{link} is a symbolic link"):
        fs.write_file(host, "a/b/state.json", b"{}", 0o600)
    assert list(elsewhere.iterdir()) == []


def test_write_file_replaces_a_symlink_at_the_temp_name_without_following_it(
    host: Path, elsewhere: Path
) -> None:
    target = victim(elsewhere)
    (host / "a").mkdir()
    (host / "a" / fs.tmp_name("state.json")).symlink_to(target)
    fs.write_file(host, "a/state.json", b"{}", 0o600)
    assert target.read_bytes() == b"not yours"
    assert (host / "a/state.json").read_bytes() == b"{}"
    assert os.listdir(host / "a") == ["state.json"]


def test_write_file_refuses_a_symlink_in_place_of_the_file(host: Path, elsewhere: Path) -> None:
    target = victim(elsewhere)
    (host / "a").mkdir()
    (host / "a/state.json").symlink_to(target)
    with pytest.raises(WriterError, match=re.escape("a/state.json is a symbolic link")):
        fs.write_file(host, "a/state.json", b"{}", 0o600)
    assert target.read_bytes() == b"not yours"


def test_read_file_is_none_when_absent_and_refuses_links(host: Path, elsewhere: Path) -> None:
    assert fs.read_file(host, "a/b") is None
    (host / "a").mkdir()
    (host / "a/b").symlink_to(victim(elsewhere))
    with pytest.raises(WriterError, match="symbolic link"):
        fs.read_file(host, "a/b")
    (host / "c").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(WriterError, match="c is a symbolic link"):
        fs.read_file(host, "c/victim")


def test_remove_file_removes_a_link_not_its_target(host: Path, elsewhere: Path) -> None:
    target = victim(elsewhere)
    (host / "a").mkdir()
    (host / "a/b").symlink_to(target)
    assert fs.remove_file(host, "a/b") is True
    assert target.read_bytes() == b"not yours"
    assert fs.remove_file(host, "a/b") is False


def test_ensure_dir_sets_the_mode_of_the_leaf_only(host: Path, umask_077: None) -> None:
    fs.ensure_dir(host, STATE, 0o700)
    assert stat.S_IMODE((host / STATE).stat().st_mode) == 0o700
    assert stat.S_IMODE((host / "var/lib").stat().st_mode) == 0o755
    (host / STATE).chmod(0o755)
    fs.ensure_dir(host, STATE, 0o700)
    assert stat.S_IMODE((host / STATE).stat().st_mode) == 0o700


@pytest.mark.parametrize("rel", ["", "/etc/x", "a/../b", "../x"])
def test_helpers_refuse_paths_that_are_not_plainly_below_the_root(host: Path, rel: str) -> None:
    with pytest.raises(WriterError, match="plain path below the host root"):
        fs.write_file(host, rel, b"x", 0o644)


# ------------------------------------------- the writer's own state refuses links


@pytest.mark.parametrize("link", ["var", "var/lib", STATE, ".dtrtrust"])
def test_symlinked_state_directory_or_parent_stops_everything(
    host: Path, elsewhere: Path, link: str
) -> None:
    (host / link).parent.mkdir(parents=True, exist_ok=True)
    (host / link).symlink_to(elsewhere, target_is_directory=True)
    result = sync_trust(host, "prod", dirs())
    assert f"{link} is a symbolic link" in result.error
    assert list(elsewhere.iterdir()) == []
    assert not (host / "etc").exists()


@pytest.mark.parametrize("name", ["state.json", "lock"])
def test_symlinked_record_or_lock_stops_everything(host: Path, elsewhere: Path, name: str) -> None:
    target = victim(elsewhere)
    (host / STATE).mkdir(parents=True)
    (host / STATE / name).symlink_to(target)
    result = sync_trust(host, "prod", dirs())
    assert not result.ok
    assert result.error
    assert target.read_bytes() == b"not yours"
    assert not (host / "etc").exists()


def test_symlink_at_the_record_temp_name_is_not_followed(host: Path, elsewhere: Path) -> None:
    target = victim(elsewhere)
    (host / STATE).mkdir(parents=True)
    (host / STATE / fs.tmp_name("state.json")).symlink_to(target)
    assert sync_trust(host, "prod", dirs()).ok
    assert target.read_bytes() == b"not yours"
    assert (host / STATE / "state.json").is_file()


@pytest.mark.parametrize("name", ["ca.crt", "client.cert", "client.key"])
def test_symlink_at_a_temp_file_name_is_not_followed(
    host: Path, elsewhere: Path, name: str
) -> None:
    target = victim(elsewhere)
    assert sync_trust(host, "prod", dirs()).ok
    (host / DOCKER / fs.tmp_name(name)).symlink_to(target)
    rotated = desired_dirs([ADDR], ["docker"], CA + CA, (CERT + b"2", KEY + b"2"))
    assert sync_trust(host, "prod", rotated).ok
    assert target.read_bytes() == b"not yours"
    assert sorted(os.listdir(host / DOCKER)) == ["ca.crt", "client.cert", "client.key"]


def test_symlink_at_the_staged_directory_name_is_not_followed(host: Path, elsewhere: Path) -> None:
    (host / "etc/docker/certs.d").mkdir(parents=True)
    (host / "etc/docker/certs.d" / fs.tmp_name(ADDR)).symlink_to(
        elsewhere, target_is_directory=True
    )
    assert sync_trust(host, "prod", dirs()).ok
    assert list(elsewhere.iterdir()) == []
    assert (host / DOCKER / "client.key").read_bytes() == KEY


def test_symlinked_backup_directory_refuses_the_backup_and_the_replacement(
    host: Path, elsewhere: Path
) -> None:
    (host / DOCKER).mkdir(parents=True)
    (host / DOCKER / "ca.crt").write_bytes(b"the admin's CA")
    (host / "etc/docker/certs.d" / writer.BACKUP_DIR).symlink_to(
        elsewhere, target_is_directory=True
    )
    result = sync_trust(host, "prod", dirs())
    assert [d.action for d in result.dirs] == ["error"]
    assert f"{writer.BACKUP_DIR} is a symbolic link" in result.dirs[0].message
    assert list(elsewhere.iterdir()) == []
    assert (host / DOCKER / "ca.crt").read_bytes() == b"the admin's CA"  # not replaced


def test_symlink_at_a_backup_name_is_replaced_not_followed(host: Path, elsewhere: Path) -> None:
    target = victim(elsewhere)
    (host / DOCKER).mkdir(parents=True)
    (host / DOCKER / "ca.crt").write_bytes(b"the admin's CA")
    backups = host / "etc/docker/certs.d" / writer.BACKUP_DIR
    backups.mkdir()
    (backups / f"{ADDR}.ca.crt").symlink_to(target)
    assert sync_trust(host, "prod", dirs()).ok
    assert target.read_bytes() == b"not yours"
    assert remove_trust(host, "prod").ok
    assert (host / DOCKER / "ca.crt").read_bytes() == b"the admin's CA"
