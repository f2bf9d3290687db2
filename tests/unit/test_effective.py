"""Will the runtime use the files? The effective-trust checks over the runtimes' real
file formats (daemon.json, containerd's config.toml and its imports, registries.conf and
its drop-ins), laid out under a real host root in tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dtrtrust.node.effective import (
    HostFiles,
    check,
    containerd_findings,
    containers_findings,
    docker_findings,
    docker_loopback,
    summary,
)

ADDR = "dtr.example.com:4443"


def put(root: Path, path: str, text: str) -> Path:
    where = root / path.lstrip("/")
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(text)
    return where


# ---------------------------------------------------------------------------- docker


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.3.4.5", True),
        ("localhost:5000", True),
        ("registry.localhost", True),
        ("[::1]:5000", False),  # dockerd's default insecure range is IPv4 127.0.0.0/8 only
        ("10.0.0.5:4443", False),
        (ADDR, False),  # names are not resolved: no offline guess
    ],
)
def test_docker_treats_ipv4_loopback_and_localhost_as_insecure(
    address: str, loopback: bool
) -> None:
    assert docker_loopback(address) is loopback
    findings = docker_findings(None, [address])
    assert bool(findings) is loopback
    if loopback:
        assert f"/etc/docker/certs.d/{address}" in findings[0].message
        assert findings[0].blocking


@pytest.mark.parametrize(
    ("entries", "address", "entry"),
    [
        ([ADDR], ADDR, ADDR),
        (["http://" + ADDR], ADDR, "http://" + ADDR),
        (["10.0.0.0/8"], "10.1.2.3:4443", "10.0.0.0/8"),
        (["192.168.0.0/16", "10.1.2.3:4443"], "10.1.2.3:4443", "10.1.2.3:4443"),
    ],
)
def test_docker_insecure_registries_entry_or_cidr_makes_certs_d_ignored(
    entries: list[str], address: str, entry: str
) -> None:
    daemon = json.dumps({"insecure-registries": entries, "log-driver": "json-file"}, indent=2)
    [finding] = docker_findings(daemon, [address])
    assert finding.blocking
    assert repr(entry) in finding.message
    assert "/etc/docker/daemon.json" in finding.message
    assert "reload" in finding.message


@pytest.mark.parametrize(
    "daemon",
    [
        json.dumps({"insecure-registries": ["dtr.example.com"]}),  # no port: another index name
        json.dumps({"insecure-registries": ["10.0.0.0/8"]}),  # a name is not resolved
        json.dumps({"registry-mirrors": ["https://" + ADDR]}),
        json.dumps({}),
    ],
)
def test_docker_config_that_leaves_the_registry_secure_has_no_finding(daemon: str) -> None:
    assert docker_findings(daemon, [ADDR]) == []


def test_docker_plain_http_mirror_is_not_effective() -> None:
    [finding] = docker_findings(json.dumps({"registry-mirrors": ["http://" + ADDR]}), [ADDR])
    assert "registry-mirrors" in finding.message
    assert f"https://{ADDR}" in finding.message


def test_docker_daemon_json_that_is_not_json_is_not_effective() -> None:
    [finding] = docker_findings('{"insecure-registries": [}', [ADDR])
    assert "not valid JSON" in finding.message


# ------------------------------------------------------------------------ containerd

V2_OK = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""
V2_BOTH = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d/:/etc/docker/certs.d"
"""
V2_EMPTY = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = ""
"""
V2_MIRRORS = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://registry-1.docker.io"]
"""
V2_OTHER_DIR = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/docker/certs.d"
"""
V3_OK = """
version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"
"""
V3_OLD_TABLE = """
version = 3
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""
V1_OK = """
[plugins.cri.registry]
  config_path = "/etc/containerd/certs.d"
"""
# Debian's stock /etc/containerd/config.toml (containerd 1.6): everything commented out.
DEBIAN_STOCK = """
#   Copyright 2018-2022 Docker Inc.
disabled_plugins = ["cri"]

#root = "/var/lib/containerd"
#state = "/run/containerd"
"""
WITH_IMPORTS = """
version = 2
imports = ["/etc/containerd/conf.d/*.toml"]
"""


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (V2_OK, None),
        (V2_BOTH, None),
        (V3_OK, None),
        (V1_OK, None),
        ("", "[plugins.cri.registry]"),  # empty file: version 1 defaults, no config_path
        (DEBIAN_STOCK, "no config_path is set"),
        ("version = 2\n", '[plugins."io.containerd.grpc.v1.cri".registry]'),
        (V2_EMPTY, '[plugins."io.containerd.grpc.v1.cri".registry]'),
        (V2_MIRRORS, "no config_path is set"),
        (V2_OTHER_DIR, "config_path is '/etc/docker/certs.d'"),
        (V3_OLD_TABLE, '[plugins."io.containerd.cri.v1.images".registry]'),
        ("version = 2\n[plugins\n", "cannot be parsed"),
        ("version = 4\n", "version = 4, which this dtrtrust does not know"),
        (WITH_IMPORTS, "no config_path is set"),  # imports followed: none sets it
    ],
)
def test_containerd_config_decides_whether_certs_d_is_effective(
    tmp_path: Path, config: str, problem: str | None
) -> None:
    put(tmp_path, "/etc/containerd/config.toml", config)
    got = containerd_findings(HostFiles(tmp_path))
    if problem is None:
        assert got == []
    else:
        [finding] = got
        assert problem in finding.message
        assert "/etc/containerd/" in finding.message  # names the file
        assert finding.blocking


def test_containerd_without_config_toml_is_not_effective(tmp_path: Path) -> None:
    [finding] = containerd_findings(HostFiles(tmp_path))
    assert "does not exist" in finding.message
    assert "restart containerd" in finding.message


def test_containerd_config_toml_directory_placeholder_counts_as_missing(tmp_path: Path) -> None:
    (tmp_path / "etc/containerd/config.toml").mkdir(parents=True)
    [finding] = containerd_findings(HostFiles(tmp_path))
    assert "does not exist" in finding.message


def test_containerd_imports_are_followed_and_the_imported_file_is_named(tmp_path: Path) -> None:
    put(tmp_path, "/etc/containerd/config.toml", WITH_IMPORTS)
    put(tmp_path, "/etc/containerd/conf.d/10-cri.toml", V2_OTHER_DIR)
    [finding] = containerd_findings(HostFiles(tmp_path))
    assert "/etc/containerd/conf.d/10-cri.toml" in finding.message
    put(tmp_path, "/etc/containerd/conf.d/20-registry.toml", V2_OK)
    assert containerd_findings(HostFiles(tmp_path)) == []


def test_containerd_import_replaces_the_main_files_plugin_table(tmp_path: Path) -> None:
    put(tmp_path, "/etc/containerd/config.toml", 'imports = ["cri.toml"]\n' + V2_OK)
    put(
        tmp_path,
        "/etc/containerd/cri.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "pause:3.9"\n',
    )
    [finding] = containerd_findings(HostFiles(tmp_path))
    assert "/etc/containerd/cri.toml" in finding.message


@pytest.mark.parametrize("distro", ["k3s", "rke2"])
def test_k3s_and_rke2_are_detected_and_pointed_at_registries_yaml(
    tmp_path: Path, distro: str
) -> None:
    put(tmp_path, "/etc/containerd/config.toml", V2_OK)  # even a good one is not read
    put(tmp_path, f"/var/lib/rancher/{distro}/agent/etc/containerd/config.toml", V2_OK)
    [finding] = containerd_findings(HostFiles(tmp_path))
    assert f"/etc/rancher/{distro}/registries.yaml" in finding.message
    assert f"restart {distro}" in finding.message


def test_k3s_is_detected_from_the_kubelet_version_when_its_files_are_not_mounted(
    tmp_path: Path,
) -> None:
    put(tmp_path, "/etc/containerd/config.toml", V2_OK)
    [finding] = containerd_findings(HostFiles(tmp_path), kubelet_version="v1.27.4+k3s1")
    assert "/etc/rancher/k3s/registries.yaml" in finding.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_containerd_config_is_unknown_not_fine(tmp_path: Path) -> None:
    put(tmp_path, "/etc/containerd/config.toml", V2_OK).chmod(0)
    [finding] = containerd_findings(HostFiles(tmp_path))
    assert "unknown" in finding.message


def test_unreadable_containerd_config_is_unknown_not_fine_with_a_failing_reader() -> None:
    def reader(path: str) -> str | None:
        raise PermissionError(13, "Permission denied", path)

    [finding] = containerd_findings(reader)
    assert "cannot read /etc/containerd/config.toml" in finding.message
    assert "unknown" in finding.message


# ------------------------------------------------------------------------ containers

BLOCKED = f"""
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "{ADDR}"
location = "{ADDR}"
blocked = true
"""
INSECURE = f"""
[[registry]]
location = "{ADDR}"
insecure = true
"""
V1_BLOCK = f"""
[registries.block]
registries = ["{ADDR}"]
"""


@pytest.mark.parametrize(
    ("conf", "blocking", "words"),
    [
        (BLOCKED, True, "blocks"),
        (V1_BLOCK, True, "blocks"),
        (INSECURE, False, "insecure"),
        (BLOCKED.replace(f'prefix = "{ADDR}"', 'prefix = "*.example.com"'), True, "blocks"),
        (BLOCKED.replace(f'prefix = "{ADDR}"', 'prefix = "*.example.org"'), True, None),
        (BLOCKED.replace(f'prefix = "{ADDR}"', f'prefix = "{ADDR}/team"'), True, "team"),
    ],
)
def test_registries_conf_blocked_is_not_effective_and_insecure_is_a_warning(
    tmp_path: Path, conf: str, blocking: bool, words: str | None
) -> None:
    put(tmp_path, "/etc/containers/registries.conf", conf)
    findings = containers_findings(HostFiles(tmp_path), [ADDR])
    if words is None:
        assert findings == []
        return
    [finding] = findings
    assert finding.blocking is blocking
    assert words in finding.message
    assert "/etc/containers/registries.conf" in finding.message


@pytest.mark.parametrize("address", ["dtr.example.com", ADDR])
def test_wildcard_prefix_blocks_every_subdomain_with_or_without_port(
    tmp_path: Path, address: str
) -> None:
    put(
        tmp_path,
        "/etc/containers/registries.conf",
        '[[registry]]\nprefix = "*.example.com"\nblocked = true\n',
    )
    [finding] = containers_findings(HostFiles(tmp_path), [address])
    assert finding.blocking
    assert containers_findings(HostFiles(tmp_path), ["example.com"]) == []


def test_registries_conf_d_drop_in_overrides_the_main_file(tmp_path: Path) -> None:
    put(tmp_path, "/etc/containers/registries.conf", BLOCKED)
    put(
        tmp_path,
        "/etc/containers/registries.conf.d/50-dtr.conf",
        f'[[registry]]\nprefix = "{ADDR}"\nlocation = "{ADDR}"\n',
    )
    assert containers_findings(HostFiles(tmp_path), [ADDR]) == []
    put(tmp_path, "/etc/containers/registries.conf.d/60-block.conf", BLOCKED)
    [finding] = containers_findings(HostFiles(tmp_path), [ADDR])
    assert "60-block.conf" in finding.message


def test_missing_registries_conf_has_no_finding(tmp_path: Path) -> None:
    assert containers_findings(HostFiles(tmp_path), [ADDR]) == []


# ------------------------------------------------------------------------------ all


def test_check_runs_only_the_trusts_targets(tmp_path: Path) -> None:
    put(tmp_path, "/etc/docker/daemon.json", json.dumps({"insecure-registries": [ADDR]}))
    put(tmp_path, "/etc/containers/registries.conf", INSECURE)
    assert check(HostFiles(tmp_path), ["notary"], [ADDR]) == []
    assert [f.target for f in check(HostFiles(tmp_path), ["docker"], [ADDR])] == ["docker"]
    findings = check(HostFiles(tmp_path), ["docker", "containers", "containerd"], [ADDR])
    assert [f.target for f in findings] == ["docker", "containerd", "containers"]
    effective, message = summary(findings)
    assert not effective
    assert message.index("containers (warning)") > message.index("containerd:")


def test_signature_changes_when_a_runtime_config_changes(tmp_path: Path) -> None:
    files = HostFiles(tmp_path)
    before = files.signature()
    put(tmp_path, "/etc/docker/daemon.json", "{}")
    assert files.signature() != before
