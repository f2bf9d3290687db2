"""Which names a registry certificate is valid for, as Go (docker, containerd) decides."""

from __future__ import annotations

import pytest

from dtrtrust.core.chain import hostname_matches

NAMES = ["dtr.example.com", "*.apps.example.com", "10.0.0.5", "::1", "Registry.Test."]


@pytest.mark.parametrize(
    ("host", "valid"),
    [
        ("dtr.example.com", True),
        ("DTR.example.com", True),
        ("dtr.example.com.", True),
        ("registry.test", True),
        ("x.apps.example.com", True),
        ("apps.example.com", False),  # a wildcard needs exactly one label
        ("a.b.apps.example.com", False),
        ("other.example.com", False),
        ("10.0.0.5", True),
        ("10.0.0.6", False),
        ("0:0:0:0:0:0:0:1", True),  # the same IPv6 address written out
        ("5.0.0.10", False),
    ],
)
def test_hostname_matches_like_go(host: str, valid: bool) -> None:
    assert hostname_matches(host, NAMES) is valid


def test_an_ip_never_matches_a_dns_name_that_looks_like_it() -> None:
    assert hostname_matches("10.0.0.5", ["10.0.0.5.nip.io", "*.0.0.5"]) is False
