"""dtrtrust.core.layout: which directories and files a node gets, and which addresses are safe."""

from __future__ import annotations

import re
import tomllib
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtrtrust.core.addresses import validate_address
from dtrtrust.core.layout import DesiredDir, desired_dirs, hosts_toml

CA = b"-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("address", "complaint"),
    [
        ("../x", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("", "empty"),
        ("A.example", "uppercase"),
        ("Registry.Test:5443", "uppercase"),
        ("x..y", "'..'"),
        (".x", "empty name part"),
        ("x.", "empty name part"),
        ("host:0", "between 1 and 65535"),
        ("host:99999", "between 1 and 65535"),
        ("host:", "no port"),
        ("host:05", "leading zeros"),
        ("host:44a", "not a number"),
        (":443", "no host"),
        ("a b", "whitespace"),
        ("host\n", "whitespace"),
        ("a" * 254, "at most 253"),
        (("a" * 63 + ".") * 3 + "a" * 62, "at most 253"),
        ("a" * 64 + ".test", "longer than 63"),
        ("-a.test", "may only hold"),
        ("a-.test", "may only hold"),
        ("under_score.test", "may only hold"),
        ("1.2.3", "not a valid IPv4"),
        ("10.0.0.256:443", "not a valid IPv4"),
        ("https://dtr.test", "path separator"),
        ("::1", "brackets"),
        ("[::1", "closing ']'"),
        ("[::g]:5000", "not a valid IPv6"),
        ("[::1]5000", "only ':port'"),
        ("[fe80::1%eth0]", "zone"),
    ],
)
def test_unsafe_or_malformed_address_is_rejected_with_a_clear_reason(
    address: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)) as info:
        validate_address(address)
    assert "\n" not in str(info.value)  # one line for the user


@pytest.mark.parametrize(
    "address",
    [
        "registry.test:5443",
        "10.0.0.5:4443",
        "[::1]:5000",
        "[2001:db8::5]",
        "localhost",
        "localhost:65535",
        "dtr.example.com",
        "a-b.c-d.example:1",
        ("a" * 63 + ".") * 3 + "a" * 61,  # 253 characters
    ],
)
def test_address_as_written_in_image_references_is_accepted_unchanged(address: str) -> None:
    assert validate_address(address) == address


@given(st.text(max_size=300))
def test_any_accepted_address_is_a_single_safe_path_component(address: str) -> None:
    try:
        validate_address(address)
    except ValueError:
        return
    path = PurePosixPath("etc/docker/certs.d") / address
    assert path.parent == PurePosixPath("etc/docker/certs.d")
    assert address not in ("", ".", "..")
    assert len(address) <= 253
    assert address == address.lower()


def _by_path(dirs: list[DesiredDir]) -> dict[str, DesiredDir]:
    return {str(d.path): d for d in dirs}


def test_each_target_gets_its_fixed_directory_per_address() -> None:
    dirs = desired_dirs(
        ["dtr.test:4443", "10.0.0.5:4443"],
        ["docker", "containers", "containerd", "notary"],
        CA,
        None,
    )
    assert sorted(_by_path(dirs)) == sorted(
        f"{root}/{addr}"
        for root in (
            "etc/docker/certs.d",
            "etc/containers/certs.d",
            "etc/containerd/certs.d",
            "root/.docker/tls",
        )
        for addr in ("dtr.test:4443", "10.0.0.5:4443")
    )


def test_client_pair_gives_cert_and_key_with_the_key_private() -> None:
    (d,) = desired_dirs(["dtr.test"], ["docker"], CA, (CERT, KEY))
    files = {f.name: f for f in d.files}
    assert set(files) == {"ca.crt", "client.cert", "client.key"}
    assert (files["ca.crt"].content, files["ca.crt"].mode) == (CA, 0o644)
    assert (files["client.cert"].content, files["client.cert"].mode) == (CERT, 0o644)
    assert (files["client.key"].content, files["client.key"].mode) == (KEY, 0o600)


def test_without_client_pair_only_the_ca_is_installed() -> None:
    (d,) = desired_dirs(["dtr.test"], ["containers"], CA, None)
    assert [f.name for f in d.files] == ["ca.crt"]


def test_containerd_hosts_toml_names_files_relative_to_its_own_directory() -> None:
    (d,) = desired_dirs(["dtr.test:4443"], ["containerd"], CA, (CERT, KEY))
    files = {f.name: f for f in d.files}
    assert set(files) == {"ca.crt", "client.cert", "client.key", "hosts.toml"}
    assert files["hosts.toml"].mode == 0o644
    doc = tomllib.loads(files["hosts.toml"].content.decode())
    assert doc["server"] == "https://dtr.test:4443"
    assert doc["host"] == {
        "https://dtr.test:4443": {
            "capabilities": ["pull", "resolve", "push"],
            "ca": "ca.crt",
            "client": [["client.cert", "client.key"]],
        }
    }


def test_containerd_hosts_toml_without_client_pair_names_no_client() -> None:
    doc = tomllib.loads(hosts_toml("[::1]:5000", client=False).decode())
    assert doc["host"]["https://[::1]:5000"] == {
        "capabilities": ["pull", "resolve", "push"],
        "ca": "ca.crt",
    }


def test_hosts_toml_refuses_an_address_that_could_inject_toml() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        hosts_toml('x"]\n[evil', client=False)


def test_notary_directory_follows_the_given_home() -> None:
    (d,) = desired_dirs(["dtr.test"], ["notary"], CA, None, home="home/alice")
    assert d.path == PurePosixPath("home/alice/.docker/tls/dtr.test")


@pytest.mark.parametrize("home", ["/root", "", "home/../etc", "home//x", "./root"])
def test_home_outside_a_plain_relative_path_is_rejected(home: str) -> None:
    with pytest.raises(ValueError, match="home"):
        desired_dirs(["dtr.test"], ["notary"], CA, None, home=home)


def test_unknown_target_is_rejected_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="docker, containers, containerd, notary"):
        desired_dirs(["dtr.test"], ["cri-o"], CA, None)


def test_empty_ca_bundle_is_rejected() -> None:
    with pytest.raises(ValueError, match="CA bundle is empty"):
        desired_dirs(["dtr.test"], ["docker"], b"", None)


def test_repeated_addresses_and_targets_give_each_directory_once() -> None:
    dirs = desired_dirs(["dtr.test", "dtr.test"], ["docker", "docker"], CA, None)
    assert [str(d.path) for d in dirs] == ["etc/docker/certs.d/dtr.test"]


def test_same_input_gives_identical_output() -> None:
    args = (["dtr.test:1", "b.test"], ["containerd", "docker"], CA, (CERT, KEY))
    assert desired_dirs(*args) == desired_dirs(*args)
