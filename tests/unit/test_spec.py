"""Parsing a DTRTrust manifest into a typed spec, with the CRD's defaults."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dtrtrust.core.spec import SpecError, parse_duration, parse_trust

PIN = "sha256:" + "ab" * 32


def manifest(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "registry": "dtr.example.com:4443",
        "ca": {"fetch": {"pinnedSHA256": [PIN]}},
    }
    base.update(spec)
    return {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": "dtr", "generation": 3},
        "spec": base,
    }


def test_defaults_match_the_crd() -> None:
    spec = parse_trust(manifest())
    assert spec.targets == ("docker",)
    assert spec.deletion_policy == "Delete"
    assert spec.verify_tls
    assert spec.verify_client_auth
    assert spec.ca.fetch is not None
    assert spec.ca.fetch.url == "https://dtr.example.com:4443/ca"
    assert spec.ca.fetch.refresh_interval == dt.timedelta(hours=1)
    assert spec.ca.fetch.rotation_overlap == dt.timedelta(days=7)
    assert spec.generation == 3


def test_openssl_form_pin_is_normalised_to_the_canonical_form() -> None:
    pin = ":".join(["AB"] * 32)
    spec = parse_trust(manifest(ca={"fetch": {"pinnedSHA256": [pin, PIN]}}))
    assert spec.ca.fetch is not None
    assert spec.ca.fetch.pins == (PIN,)


def test_addresses_put_the_registry_first_and_drop_duplicate_aliases() -> None:
    spec = parse_trust(manifest(aliases=["10.0.0.5:4443", "dtr.example.com:4443", "10.0.0.5:4443"]))
    assert spec.addresses == ("dtr.example.com:4443", "10.0.0.5:4443")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"registry": None}, "spec.registry"),
        ({"registry": "../etc"}, "spec.registry"),
        ({"aliases": ["ok.example", "Bad.example"]}, "spec.aliases[1]"),
        ({"ca": {}}, "spec.ca"),
        ({"ca": {"fetch": {"pinnedSHA256": ["nope"]}}}, "spec.ca.fetch.pinnedSHA256[0]"),
        ({"ca": {"fetch": {"url": "ftp://x/ca"}}}, "spec.ca.fetch.url"),
        ({"ca": {"fetch": {"refreshInterval": "10s"}}}, "spec.ca.fetch.refreshInterval"),
        ({"ca": {"fetch": {"refreshInterval": "soon"}}}, "spec.ca.fetch.refreshInterval"),
        ({"ca": {"secretRefs": [{"name": "Bad_Name"}]}}, "spec.ca.secretRefs[0].name"),
        ({"targets": ["docker", "kubelet"]}, "spec.targets[1]"),
        ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy"),
        ({"clientCertificate": {"secretRef": {}}}, "spec.clientCertificate.secretRef.name"),
        ({"verify": {"tls": "yes"}}, "spec.verify.tls"),
    ],
)
def test_invalid_field_is_named_in_the_error(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_trust(manifest(**change))
    assert err.value.field == field


def test_wrong_kind_is_refused() -> None:
    doc = manifest()
    doc["kind"] = "ConfigMap"
    with pytest.raises(SpecError, match=r"expected dtrtrust\.io/v1alpha1 DTRTrust"):
        parse_trust(doc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", dt.timedelta(seconds=90)),
        ("1h30m", dt.timedelta(minutes=90)),
        ("168h", dt.timedelta(days=7)),
    ],
)
def test_go_style_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text, "x") == expected
