"""dtrtrust.node.writer on a real file system under tmp_path: atomic, owned, reversible."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from dtrtrust.core.layout import DesiredDir, DesiredFile, desired_dirs
from dtrtrust.node import fs, record, writer
from dtrtrust.node.writer import owned_trusts, remove_trust, sync_trust

CA = b"-----BEGIN CERTIFICATE-----\nCA one\n-----END CERTIFICATE-----\n"
CA2 = b"-----BEGIN CERTIFICATE-----\nCA two\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"
ADDR = "registry.test:5443"
DOCKER = f"etc/docker/certs.d/{ADDR}"
RECORD = f"{writer.STATE_DIR}/state.json"
STRICT = os.environ.get("DTRTRUST_STRICT") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip, or with DTRTRUST_STRICT=1 (CI runs as root) fail: never skipped silently."""
    if STRICT:
        pytest.fail(f"{reason}; DTRTRUST_STRICT=1 makes this a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def in_state_dir(rel: str) -> bool:
    """rel is the state directory, inside it or one of its parents (var, var/lib)."""
    state = writer.STATE_DIR
    return rel == state or rel.startswith(state + "/") or state.startswith(rel + "/")


def dirs_for(
    addresses: list[str] | None = None,
    targets: list[str] | None = None,
    ca: bytes = CA,
    client: tuple[bytes, bytes] | None = (CERT, KEY),
) -> list[DesiredDir]:
    return desired_dirs(addresses or [ADDR], targets or ["docker"], ca, client)


def tree(root: Path, *, skip_state: bool = True) -> dict[str, tuple[int, int, int]]:
    """Every path under root -> (mode, inode, mtime_ns), links not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if skip_state and in_state_dir(rel):
                continue
            st = p.lstat()
            out[rel] = (stat.S_IMODE(st.st_mode), st.st_ino, st.st_mtime_ns)
    return out


def all_bytes_under(root: Path) -> bytes:
    data = b""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath, name)
            if not p.is_symlink():
                data += p.read_bytes()
    return data


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
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# ------------------------------------------------------------------------ writing


def test_first_sync_writes_every_file_with_its_content(host: Path) -> None:
    result = sync_trust(host, "prod", dirs_for(targets=["docker", "containerd", "notary"]))
    assert result.ok, result
    assert [d.action for d in result.dirs] == ["written"] * 3
    for rel in (DOCKER, f"etc/containerd/certs.d/{ADDR}", f"root/.docker/tls/{ADDR}"):
        assert (host / rel / "ca.crt").read_bytes() == CA
        assert (host / rel / "client.cert").read_bytes() == CERT
        assert (host / rel / "client.key").read_bytes() == KEY


def test_containerd_hosts_toml_on_disk_points_at_its_sibling_files(host: Path) -> None:
    sync_trust(host, "prod", dirs_for(targets=["containerd"]))
    d = host / "etc/containerd/certs.d" / ADDR
    doc = tomllib.loads((d / "hosts.toml").read_text())
    entry = doc["host"][f"https://{ADDR}"]
    assert doc["server"] == f"https://{ADDR}"
    assert (d / entry["ca"]).read_bytes() == CA
    ((cert, key),) = entry["client"]
    assert ((d / cert).read_bytes(), (d / key).read_bytes()) == (CERT, KEY)


@pytest.mark.parametrize("mask", [0o077, 0o000, 0o022])
def test_modes_are_fixed_whatever_the_umask(host: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        result = sync_trust(host, "prod", dirs_for(targets=["docker", "containerd"]))
    finally:
        os.umask(old)
    assert result.ok, result
    modes = {rel: mode for rel, (mode, _, _) in tree(host).items()}
    for rel, mode in modes.items():
        if rel.endswith("client.key"):
            assert mode == 0o600, rel
        elif Path(host, rel).is_dir():
            assert mode == 0o755, rel
        else:
            assert mode == 0o644, rel
    assert stat.S_IMODE((host / writer.STATE_DIR).stat().st_mode) == 0o700


def test_second_sync_with_the_same_input_writes_nothing(host: Path) -> None:
    desired = dirs_for(["registry.test:5443", "10.0.0.5:4443"], ["docker", "containerd"])
    sync_trust(host, "prod", desired)
    before = tree(host, skip_state=False)
    result = sync_trust(host, "prod", desired)
    assert [d.action for d in result.dirs] == ["unchanged"] * 4
    assert tree(host, skip_state=False) == before


def test_changed_ca_is_renamed_into_the_same_directory_leaving_no_temp_file(host: Path) -> None:
    sync_trust(host, "prod", dirs_for())
    dir_ino = (host / DOCKER).stat().st_ino
    cert = (host / DOCKER / "client.cert").stat()
    result = sync_trust(host, "prod", dirs_for(ca=CA2))
    assert [d.action for d in result.dirs] == ["written"]
    assert (host / DOCKER / "ca.crt").read_bytes() == CA2
    assert (host / DOCKER).stat().st_ino == dir_ino  # bind mounts of it see the change
    assert sorted(os.listdir(host / DOCKER)) == ["ca.crt", "client.cert", "client.key"]
    unchanged = (host / DOCKER / "client.cert").stat()
    assert (unchanged.st_ino, unchanged.st_mtime_ns) == (cert.st_ino, cert.st_mtime_ns)


def test_wrong_mode_on_an_owned_file_is_fixed_without_rewriting_it(host: Path) -> None:
    sync_trust(host, "prod", dirs_for())
    key = host / DOCKER / "client.key"
    key.chmod(0o644)
    ino = key.stat().st_ino
    assert sync_trust(host, "prod", dirs_for()).ok
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.stat().st_ino == ino


def test_foreign_files_beside_ours_are_untouched_by_a_rewrite(host: Path) -> None:
    (host / DOCKER).mkdir(parents=True)
    extra = host / DOCKER / "extra.cert"
    extra.write_bytes(b"admin's own")
    before = extra.stat()
    sync_trust(host, "prod", dirs_for())
    assert sync_trust(host, "prod", dirs_for(ca=CA2)).ok
    assert sorted(os.listdir(host / DOCKER)) == [
        "ca.crt",
        "client.cert",
        "client.key",
        "extra.cert",
    ]
    assert (host / DOCKER / "ca.crt").read_bytes() == CA2
    after = extra.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_foreign_file_created_while_we_stage_survives_the_rewrite(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_trust(host, "prod", dirs_for())
    real = writer._renames

    def admin_writes_then_renames(live_fd: int, staged: list[tuple[str, str]]) -> None:
        (host / DOCKER / "late.crt").write_bytes(b"written while we staged")
        real(live_fd, staged)

    monkeypatch.setattr(writer, "_renames", admin_writes_then_renames)
    assert sync_trust(host, "prod", dirs_for(ca=CA2)).ok
    assert (host / DOCKER / "late.crt").read_bytes() == b"written while we staged"
    assert (host / DOCKER / "ca.crt").read_bytes() == CA2


def test_renames_follow_the_order_a_path_reader_reads_in(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_trust(host, "prod", dirs_for(targets=["containerd"]))
    seen: list[list[str]] = []
    real = writer._renames

    def record(live_fd: int, staged: list[tuple[str, str]]) -> None:
        seen.append([name for name, _ in staged])
        real(live_fd, staged)

    monkeypatch.setattr(writer, "_renames", record)
    other = (b"-----BEGIN CERTIFICATE-----\nOTHER\n-----END CERTIFICATE-----\n", KEY + b"2")
    assert sync_trust(host, "prod", dirs_for(targets=["containerd"], ca=CA2, client=other)).ok
    # dockerd lists the directory and reads ca.crt, client.cert, client.key in that
    # order: renaming in the same order keeps the window for a torn pair smallest.
    assert seen == [["ca.crt", "client.cert", "client.key"]]


# ------------------------------------------------------------------ foreign files


def test_foreign_ca_is_backed_up_replaced_and_restored_byte_identical(host: Path) -> None:
    d = host / DOCKER
    d.mkdir(parents=True)
    (d / "ca.crt").write_bytes(b"the admin's own CA\n")
    (d / "ca.crt").chmod(0o640)
    (d / "notes.txt").write_bytes(b"keep me")
    original = (d / "ca.crt").stat()

    assert sync_trust(host, "prod", dirs_for()).ok
    assert (d / "ca.crt").read_bytes() == CA
    assert (d / "notes.txt").read_bytes() == b"keep me"
    assert sync_trust(host, "prod", dirs_for(ca=CA2)).ok  # a rotation keeps the backup
    assert (d / "notes.txt").read_bytes() == b"keep me"

    result = remove_trust(host, "prod")
    assert result.ok, result
    restored = (d / "ca.crt").stat()
    assert (d / "ca.crt").read_bytes() == b"the admin's own CA\n"
    assert stat.S_IMODE(restored.st_mode) == 0o640
    assert (restored.st_ino, restored.st_mtime_ns) == (original.st_ino, original.st_mtime_ns)
    assert sorted(os.listdir(d)) == ["ca.crt", "notes.txt"]
    assert f"{DOCKER}/ca.crt" in result.removed
    assert KEY not in all_bytes_under(host)


def test_foreign_file_identical_to_ours_is_left_alone_and_survives_removal(host: Path) -> None:
    d = host / DOCKER
    d.mkdir(parents=True)
    (d / "ca.crt").write_bytes(CA)
    (d / "ca.crt").chmod(0o644)
    ino = (d / "ca.crt").stat().st_ino
    assert sync_trust(host, "prod", dirs_for(client=None)).dirs[0].action == "unchanged"
    remove_trust(host, "prod")
    assert (d / "ca.crt").stat().st_ino == ino


def test_foreign_hosts_toml_is_untouched_and_reported_as_conflict(host: Path) -> None:
    d = host / "etc/containerd/certs.d" / ADDR
    d.mkdir(parents=True)
    (d / "hosts.toml").write_bytes(b'server = "https://mirror.test"\n')
    before = tree(host)

    result = sync_trust(host, "prod", dirs_for(targets=["containerd", "docker"]))
    by_target = {r.target: r for r in result.dirs}
    assert by_target["containerd"].action == "conflict"
    assert f"etc/containerd/certs.d/{ADDR}/hosts.toml" in by_target["containerd"].message
    assert "move it away" in by_target["containerd"].message
    assert by_target["docker"].action == "written"  # other directories carry on
    assert not result.ok

    def containerd(t: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
        return {k: v for k, v in t.items() if k.startswith("etc/containerd")}

    assert containerd(tree(host)) == containerd(before)


def test_second_trust_for_the_same_address_directory_is_a_conflict(host: Path) -> None:
    assert sync_trust(host, "first", dirs_for()).ok
    before = tree(host)
    result = sync_trust(host, "second", dirs_for(ca=CA2))
    assert [d.action for d in result.dirs] == ["conflict"]
    assert "'first'" in result.dirs[0].message
    assert tree(host) == before
    assert owned_trusts(host) == {"first"}


def test_owned_file_changed_by_someone_else_is_not_deleted_on_removal(host: Path) -> None:
    sync_trust(host, "prod", dirs_for())
    (host / DOCKER / "ca.crt").write_bytes(b"edited by hand")
    remove_trust(host, "prod")
    assert (host / DOCKER / "ca.crt").read_bytes() == b"edited by hand"
    assert not (host / DOCKER / "client.key").exists()


# ------------------------------------------------------------------ symlinks, paths


@pytest.mark.parametrize(
    ("link", "refused"),
    [
        ("etc", "etc is a symbolic link"),
        ("etc/docker", "etc/docker is a symbolic link"),
        ("etc/docker/certs.d", "etc/docker/certs.d is a symbolic link"),
        (DOCKER, f"{DOCKER} is a symbolic link"),
    ],
)
def test_symlink_at_any_level_of_the_path_is_refused(
    host: Path, elsewhere: Path, link: str, refused: str
) -> None:
    target = host / link
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(elsewhere, target_is_directory=True)

    result = sync_trust(host, "prod", dirs_for())
    assert [d.action for d in result.dirs] == ["error"]
    assert refused in result.dirs[0].message
    assert list(elsewhere.iterdir()) == []
    assert target.is_symlink()


def test_symlink_in_place_of_a_file_is_refused_and_its_target_untouched(
    host: Path, elsewhere: Path
) -> None:
    victim = elsewhere / "shadow"
    victim.write_bytes(b"not yours")
    (host / DOCKER).mkdir(parents=True)
    (host / DOCKER / "client.key").symlink_to(victim)
    result = sync_trust(host, "prod", dirs_for())
    assert [d.action for d in result.dirs] == ["error"]
    assert "client.key is a symbolic link" in result.dirs[0].message
    assert victim.read_bytes() == b"not yours"


def test_symlinked_state_directory_stops_everything_with_a_clear_error(
    host: Path, elsewhere: Path
) -> None:
    (host / writer.STATE_DIR).parent.mkdir(parents=True)
    (host / writer.STATE_DIR).symlink_to(elsewhere, target_is_directory=True)
    result = sync_trust(host, "prod", dirs_for())
    assert not result.ok
    assert "symbolic link" in result.error
    assert list(elsewhere.iterdir()) == []
    assert not (host / "etc").exists()


@pytest.mark.parametrize("address", ["../escape", "a/b", "UPPER.test", "x..y", ""])
def test_writer_revalidates_addresses_it_is_handed(host: Path, address: str) -> None:
    bad = DesiredDir(
        "docker", PurePosixPath("etc/docker/certs.d"), address, (DesiredFile("ca.crt", CA, 0o644),)
    )
    result = sync_trust(host, "prod", [bad])
    assert [d.action for d in result.dirs] == ["error"]
    assert "address" in result.dirs[0].message
    assert not (host / "etc").exists()
    assert not (host.parent / "escape").exists()


@pytest.mark.parametrize(
    ("root", "name", "mode"),
    [
        ("../outside", "ca.crt", 0o644),
        ("/etc/docker/certs.d", "ca.crt", 0o644),
        ("etc/docker/certs.d", "../ca.crt", 0o644),
        ("etc/docker/certs.d", "ca.crt", 0o666),
    ],
)
def test_writer_refuses_roots_names_and_modes_the_layout_never_produces(
    host: Path, root: str, name: str, mode: int
) -> None:
    bad = DesiredDir("docker", PurePosixPath(root), ADDR, (DesiredFile(name, CA, mode),))
    result = sync_trust(host, "prod", [bad])
    assert [d.action for d in result.dirs] == ["error"]
    assert tree(host) == {}


# ----------------------------------------------------------------------- removal


def test_removed_alias_loses_its_directories_and_the_rest_stays(host: Path) -> None:
    both = dirs_for([ADDR, "10.0.0.5:4443"], ["docker", "containerd"])
    sync_trust(host, "prod", both)
    kept = tree(host)
    result = sync_trust(host, "prod", dirs_for([ADDR], ["docker", "containerd"]))
    assert result.ok
    assert sorted(result.removed) == [
        "etc/containerd/certs.d/10.0.0.5:4443",
        "etc/docker/certs.d/10.0.0.5:4443",
    ]
    assert not (host / "etc/docker/certs.d/10.0.0.5:4443").exists()
    assert not (host / "etc/containerd/certs.d/10.0.0.5:4443").exists()

    def registry_dirs(t: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
        return {k: v for k, v in t.items() if ADDR in k}

    assert registry_dirs(kept) == registry_dirs(tree(host))  # untouched: same inodes, mtimes


def test_dropped_client_pair_leaves_only_the_ca(host: Path) -> None:
    sync_trust(host, "prod", dirs_for())
    assert sync_trust(host, "prod", dirs_for(client=None)).ok
    assert sorted(os.listdir(host / DOCKER)) == ["ca.crt"]


def test_removed_trust_leaves_no_trace_and_created_directories_go(host: Path) -> None:
    (host / "etc/docker/certs.d").mkdir(parents=True)  # the admin's, must stay
    sync_trust(host, "prod", dirs_for([ADDR, "alias.test"], ["docker", "containerd", "notary"]))
    assert owned_trusts(host) == {"prod"}

    result = remove_trust(host, "prod")
    assert result.ok, result
    assert tree(host) == {
        "etc": tree(host)["etc"],
        "etc/docker": tree(host)["etc/docker"],
        "etc/docker/certs.d": tree(host)["etc/docker/certs.d"],
    }
    assert owned_trusts(host) == set()
    assert KEY not in all_bytes_under(host)
    assert json.loads((host / RECORD).read_text())["dirs"] == {}


def test_remove_limited_to_some_roots_keeps_the_others(host: Path) -> None:
    sync_trust(host, "prod", dirs_for(targets=["docker", "containerd"]))
    remove_trust(host, "prod", roots=["etc/containerd/certs.d"])
    assert not (host / "etc/containerd").exists()
    assert (host / DOCKER / "client.key").read_bytes() == KEY


def test_removal_of_one_trust_keeps_a_shared_parent_for_the_other(host: Path) -> None:
    sync_trust(host, "a", dirs_for(["a.test"]))
    sync_trust(host, "b", dirs_for(["b.test"]))
    remove_trust(host, "a")
    assert (host / "etc/docker/certs.d/b.test/ca.crt").read_bytes() == CA
    assert owned_trusts(host) == {"b"}
    remove_trust(host, "b")
    assert not (host / "etc").exists()


def test_owned_trusts_of_an_untouched_root_is_empty(host: Path) -> None:
    assert owned_trusts(host) == set()


def test_unreadable_ownership_record_stops_with_a_clear_error(host: Path) -> None:
    (host / writer.STATE_DIR).mkdir(parents=True)
    (host / RECORD).write_text("{not json")
    result = sync_trust(host, "prod", dirs_for())
    assert "state.json" in result.error
    assert "move it away" in result.error
    assert not (host / "etc").exists()


# ----------------------------------------------------------- interrupted writers


class Killed(BaseException):
    """Stands in for SIGKILL at one exact point (the real one is in test_writer_crash)."""


def test_writer_stopped_between_two_renames_is_completed_by_the_next_run(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = host / DOCKER
    d.mkdir(parents=True)
    (d / "ca.crt").write_bytes(b"admin CA")
    (d / "notes.txt").write_bytes(b"keep")
    sync_trust(host, "prod", dirs_for())
    new_cert = (b"-----BEGIN CERTIFICATE-----\nROTATED\n-----END CERTIFICATE-----\n", KEY + b"2")

    def first_rename_then_die(live_fd: int, staged: list[tuple[str, str]]) -> None:
        name, tmp = staged[0]
        os.rename(tmp, name, src_dir_fd=live_fd, dst_dir_fd=live_fd)
        (d / "late.txt").write_bytes(b"appeared")
        raise Killed

    monkeypatch.setattr(writer, "_renames", first_rename_then_die)
    with pytest.raises(Killed):
        sync_trust(host, "prod", dirs_for(ca=CA2, client=new_cert))
    monkeypatch.undo()
    assert (d / "ca.crt").read_bytes() == CA2  # the first rename happened
    assert (d / "client.cert").read_bytes() == CERT  # the others did not

    assert sync_trust(host, "prod", dirs_for(ca=CA2, client=new_cert)).ok
    assert (d / "client.cert").read_bytes() == new_cert[0]
    assert (d / "client.key").read_bytes() == new_cert[1]
    assert sync_trust(host, "prod", dirs_for(ca=CA2, client=new_cert)).dirs[0].action == (
        "unchanged"
    )
    assert sorted(os.listdir(d)) == [
        "ca.crt",
        "client.cert",
        "client.key",
        "late.txt",
        "notes.txt",
    ]
    remove_trust(host, "prod")
    assert (d / "ca.crt").read_bytes() == b"admin CA"
    assert sorted(os.listdir(d)) == ["ca.crt", "late.txt", "notes.txt"]


def test_writer_stopped_after_its_renames_leaves_a_record_the_next_run_accepts(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_trust(host, "prod", dirs_for())
    real = writer._renames

    def renames_then_die(live_fd: int, staged: list[tuple[str, str]]) -> None:
        real(live_fd, staged)
        raise Killed  # before the record says the write is done

    monkeypatch.setattr(writer, "_renames", renames_then_die)
    with pytest.raises(Killed):
        sync_trust(host, "prod", dirs_for(ca=CA2))
    monkeypatch.undo()
    assert sync_trust(host, "prod", dirs_for(ca=CA2)).dirs[0].action == "unchanged"
    result = remove_trust(host, "prod")
    assert result.ok, result
    assert not (host / "etc").exists()  # the record covered the new files too


def test_writer_stopped_before_its_renames_leaves_the_old_set_and_no_temp_file(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_trust(host, "prod", dirs_for())

    def die(*_: object) -> None:
        raise Killed

    monkeypatch.setattr(writer, "_renames", die)
    with pytest.raises(Killed):
        sync_trust(host, "prod", dirs_for(ca=CA2))
    assert (host / DOCKER / "ca.crt").read_bytes() == CA
    assert ".ca.crt.dtrtrust-new" in os.listdir(host / DOCKER)  # hidden, not a *.crt
    monkeypatch.undo()

    result = remove_trust(host, "prod")
    assert result.ok, result
    assert not (host / "etc").exists()


def test_new_directory_appears_whole_or_not_at_all(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die(*_: object) -> None:
        raise Killed

    monkeypatch.setattr(fs, "rename_noreplace", die)
    with pytest.raises(Killed):
        sync_trust(host, "prod", dirs_for())
    assert not (host / DOCKER).exists()
    staged = host / "etc/docker/certs.d" / f".{ADDR}.dtrtrust-new"
    assert sorted(os.listdir(staged)) == ["ca.crt", "client.cert", "client.key"]
    monkeypatch.undo()

    assert sync_trust(host, "prod", dirs_for()).ok
    assert sorted(os.listdir(host / "etc/docker/certs.d")) == [ADDR]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_files_under_a_users_home_belong_to_that_user(host: Path) -> None:
    home = host / "home/alice"
    home.mkdir(parents=True)
    os.chown(home, 4321, 4321)
    desired = desired_dirs([ADDR], ["notary"], CA, (CERT, KEY), home="home/alice")
    assert sync_trust(host, "prod", desired).ok
    for p in [home / ".docker", home / ".docker/tls", *(home / ".docker/tls").rglob("*")]:
        assert (p.stat().st_uid, p.stat().st_gid) == (4321, 4321), p


# ------------------------------------------------------------------------ bind mounts


@pytest.fixture
def bind_mounted_root(host: Path, tmp_path: Path) -> Iterator[Path]:
    """etc/docker/certs.d bind-mounted from elsewhere, as a DaemonSet's hostPath is."""
    source = tmp_path / "node-certs.d"
    source.mkdir()
    target = host / "etc/docker/certs.d"
    target.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "--bind", str(source), str(target)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        skip_or_fail(f"bind mounts need root: {mounted.stderr.decode().strip()}")
    try:
        yield source
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_bind_mounted_target_root_is_written_atomically_within_its_own_mount(
    host: Path, bind_mounted_root: Path
) -> None:
    # A rename between two bind mounts of one file system fails with EXDEV even though
    # both report the same st_dev: temp files, staged directories and backups all live
    # inside the mounted root.
    result = sync_trust(host, "t", dirs_for())
    assert result.ok, result
    assert (bind_mounted_root / ADDR / "client.key").read_bytes() == KEY
    result = sync_trust(host, "t", dirs_for(ca=CA2))
    assert result.ok, result
    assert (bind_mounted_root / ADDR / "ca.crt").read_bytes() == CA2
    assert remove_trust(host, "t").error == ""
    assert not (bind_mounted_root / ADDR).exists()


def test_a_bind_mount_of_the_address_directory_sees_every_rewrite(
    host: Path, tmp_path: Path
) -> None:
    # A DinD sidecar mounts certs.d/<addr> itself: a writer that replaced the directory
    # would leave it holding the old generation for ever.
    assert sync_trust(host, "t", dirs_for()).ok
    view = tmp_path / "sidecar-certs.d" / ADDR
    view.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "--bind", str(host / DOCKER), str(view)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        skip_or_fail(f"bind mounts need root: {mounted.stderr.decode().strip()}")
    try:
        other = (b"-----BEGIN CERTIFICATE-----\nROTATED\n-----END CERTIFICATE-----\n", KEY + b"2")
        assert sync_trust(host, "t", dirs_for(ca=CA2, client=other)).ok
        assert (view / "ca.crt").read_bytes() == CA2
        assert (view / "client.cert").read_bytes() == other[0]
        assert (view / "client.key").read_bytes() == other[1]
        assert sync_trust(host, "t", dirs_for(ca=CA, client=None)).ok
        assert sorted(os.listdir(view)) == ["ca.crt"]
        assert (view / "ca.crt").read_bytes() == CA
    finally:
        subprocess.run(["umount", str(view)], check=True)


# ------------------------------------------------------------ the record's cost


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_EXCL


def test_no_op_sync_makes_no_write_at_all_record_included(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desired = dirs_for([ADDR, "10.0.0.5:4443"], ["docker", "containerd", "notary"])
    assert sync_trust(host, "prod", desired).ok
    assert sync_trust(host, "other", dirs_for(["other.test"])).ok
    before = tree(host, skip_state=False)
    calls: list[str] = []
    real_open = os.open

    def spy(name: str):  # type: ignore[no-untyped-def]
        real = getattr(os, name)

        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(f"{name}{args[:2]}")
            return real(*args, **kwargs)

        return wrapper

    def open_spy(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if flags & WRITE_FLAGS and not str(path).endswith("lock"):
            calls.append(f"open({path!r}, {flags:#o})")
        return real_open(path, flags, *args, **kwargs)

    for name in ("rename", "replace", "unlink", "rmdir", "mkdir", "link", "fchmod", "fchown"):
        monkeypatch.setattr(os, name, spy(name))
    monkeypatch.setattr(os, "open", open_spy)
    result = sync_trust(host, "prod", desired)
    monkeypatch.undo()
    assert [d.action for d in result.dirs] == ["unchanged"] * 6
    assert calls == []
    assert tree(host, skip_state=False) == before


def test_record_is_parsed_once_and_not_again_while_unchanged(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = dirs_for([f"r{i}.test" for i in range(10)], ["docker", "containerd"])
    assert sync_trust(host, "prod", many).ok
    record.forget_all()  # as a freshly started agent
    loads: list[int] = []
    dumps: list[int] = []
    real_load, real_dump = record.Record.load, record.Record.dump

    def load(raw: bytes) -> record.Record:
        loads.append(len(raw))
        return real_load(raw)

    def dump(self: record.Record) -> bytes:
        dumps.append(1)
        return real_dump(self)

    monkeypatch.setattr(record.Record, "load", staticmethod(load))
    monkeypatch.setattr(record.Record, "dump", dump)
    for _ in range(3):
        assert sync_trust(host, "prod", many).ok
    assert (len(loads), len(dumps)) == (1, 0)  # parsed by the first call only, never written

    rotated = dirs_for([f"r{i}.test" for i in range(10)], ["docker", "containerd"], ca=CA2)
    assert [d.action for d in sync_trust(host, "prod", rotated).dirs] == ["written"] * 20
    assert (len(loads), len(dumps)) == (1, 2)  # 20 directories: one intent, one outcome
    assert sync_trust(host, "prod", rotated).ok
    assert (len(loads), len(dumps)) == (1, 2)


def test_record_written_by_another_process_is_read_again(host: Path) -> None:
    assert sync_trust(host, "a", dirs_for(["a.test"])).ok
    data = json.loads((host / RECORD).read_text())
    data["dirs"].pop("etc/docker/certs.d/a.test")
    tmp = host / writer.STATE_DIR / "elsewhere.json"
    tmp.write_text(json.dumps(data))
    tmp.rename(host / RECORD)  # as `dtrtrust apply` would, under the lock
    assert owned_trusts(host) == set()
    # The directory is no longer ours: a sync for another trust may claim it.
    assert sync_trust(host, "b", dirs_for(["a.test"])).dirs[0].action == "unchanged"
    assert owned_trusts(host) == {"b"}


def test_many_trusts_in_one_call_write_the_record_once_per_batch_of_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync of many trusts must not serialise the whole record per trust (it
    names every directory of the node: O(trusts^2) at 1,000 trusts)."""
    saves: list[bool] = []
    real_save = record.RecordFile.save

    def counting(self: record.RecordFile) -> bool:
        wrote = real_save(self)
        saves.append(wrote)
        return wrote

    monkeypatch.setattr(record.RecordFile, "save", counting)
    wanted = {
        f"t{i:03d}": dirs_for(addresses=[f"r{i}.test:5443"], targets=["docker", "containerd"])
        for i in range(150)
    }  # 300 directories: more than MAX_OPEN_JOBS prepared at once
    results = writer.sync_trusts(tmp_path, wanted)
    assert all(r.ok and [d.action for d in r.dirs] == ["written"] * 2 for r in results.values())
    assert owned_trusts(tmp_path) == set(wanted)
    assert (tmp_path / "etc/docker/certs.d/r149.test:5443/client.key").read_bytes() == KEY
    # created parents, then the intent of each batch of 128 directories, then the outcome
    assert sum(saves) <= 3 + 2 * -(-300 // writer.MAX_OPEN_JOBS)
    saves.clear()
    again = writer.sync_trusts(tmp_path, wanted)
    assert all(d.action == "unchanged" for r in again.values() for d in r.dirs)
    assert sum(saves) == 0, "nothing changed: the record is not written"


def test_a_conflict_of_one_trust_in_a_batch_leaves_the_others_written(tmp_path: Path) -> None:
    foreign = tmp_path / "etc/containerd/certs.d/r1.test:5443"
    foreign.mkdir(parents=True)
    (foreign / "hosts.toml").write_text("# the admin's own\n")
    results = writer.sync_trusts(
        tmp_path,
        {
            "a": dirs_for(addresses=["r1.test:5443"], targets=["containerd"]),
            "b": dirs_for(addresses=["r2.test:5443"], targets=["containerd"]),
        },
    )
    assert [d.action for d in results["a"].dirs] == ["conflict"]
    assert [d.action for d in results["b"].dirs] == ["written"]
    assert (foreign / "hosts.toml").read_text() == "# the admin's own\n"
