"""The canonical CRD in crds/ and the examples that must validate against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dtrtrust.core.spec import SpecError, parse_trust

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "dtrtrust.io_dtrtrusts.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _trusts(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "DTRTrust"]


def _validate(obj: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(obj)


def _walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")


def test_crd_names_are_the_fixed_contract() -> None:
    names = CRD["spec"]["names"]
    assert CRD["spec"]["group"] == "dtrtrust.io"
    assert CRD["spec"]["scope"] == "Cluster"
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == (
        "DTRTrust",
        "dtrtrusts",
        "dtrtrust",
        ["dtrt"],
    )
    version = CRD["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Registry",
        "Ready",
        "Nodes",
        "Expires",
        "Age",
    ]


def test_wide_output_adds_ready_reason_message_and_the_bundle_secret() -> None:
    columns = CRD["spec"]["versions"][0]["additionalPrinterColumns"]
    wide = {c["name"]: c["jsonPath"] for c in columns if c.get("priority")}
    assert wide == {
        "Reason": '.status.conditions[?(@.type=="Ready")].reason',
        "Message": '.status.conditions[?(@.type=="Ready")].message',
        "Secret": ".status.bundle.secretName",
    }


def test_conditions_are_a_list_keyed_by_type_for_server_side_apply_and_diffs() -> None:
    conditions = SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


def test_no_crd_category_is_also_a_resource_name_kubectl_would_expand() -> None:
    # kubectl resolves a category before a singular name: a category "dtrtrust" made
    # `kubectl get dtrtrust NAME` mean both kinds ("you must specify only one resource").
    crds = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    names = {
        n
        for crd in crds
        for n in (
            crd["spec"]["names"]["plural"],
            crd["spec"]["names"]["singular"],
            *crd["spec"]["names"].get("shortNames", []),
        )
    }
    categories = {c for crd in crds for c in crd["spec"]["names"].get("categories", [])}
    assert categories == {"dtrtrust-all"}
    assert not categories & names


def test_no_category_is_also_a_resource_name_so_kubectl_describe_and_delete_work() -> None:
    # kubectl expands a category before it looks up a resource name: a category named like
    # a resource turns `kubectl describe dtrtrust NAME` into two resource types (an error).
    crds = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    crds = [c for c in crds if c and c.get("kind") == "CustomResourceDefinition"]
    names: set[str] = set()
    categories: set[str] = set()
    for crd in crds:
        n = crd["spec"]["names"]
        names |= {n["plural"], n["singular"], n["kind"].lower(), *n.get("shortNames", [])}
        categories |= set(n.get("categories", []))
    assert len(crds) >= 2
    assert categories
    assert not categories & names


def test_every_spec_and_status_field_has_a_description_for_kubectl_explain() -> None:
    missing = [
        path
        for root in ("spec", "status")
        for path, node in _walk(SCHEMA["properties"][root], root)
        if not node.get("description") and not path.endswith("[]")
    ]
    assert missing == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_crd_and_parses(path: Path) -> None:
    trusts = _trusts(path)
    assert trusts, f"{path.name} has no DTRTrust"
    for trust in trusts:
        _validate(trust)
        parse_trust(trust)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("registry", "DTR.example.com"),
        ("registry", "dtr.example.com/path"),
        ("registry", "https://dtr.example.com"),
        ("registry", "dtr..example.com"),
        ("registry", "dtr.example.com:0"),
        ("registry", "dtr.example.com:"),
        ("targets", ["docker", "kubelet"]),
        ("deletionPolicy", "Orphan"),
        ("nodeSelector", {"role": "-build"}),
        ("nodeSelector", {"role": "build pool"}),
        ("nodeSelector", {"role": "x" * 64}),
        ("ca", {"pem": "x" * (64 * 1024 + 1)}),
    ],
)
def test_invalid_spec_is_rejected_by_both_the_crd_and_the_parser(field: str, value: Any) -> None:
    trust = _trusts(ROOT / "examples" / "pinned-fetch.yaml")[0]
    trust["spec"][field] = value
    with pytest.raises(jsonschema.ValidationError):
        _validate(trust)
    with pytest.raises(SpecError):
        parse_trust(trust)


def test_malformed_pin_is_rejected_by_both_the_crd_and_the_parser() -> None:
    trust = _trusts(ROOT / "examples" / "pinned-fetch.yaml")[0]
    trust["spec"]["ca"]["fetch"]["pinnedSHA256"] = ["sha256:abc"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(trust)
    with pytest.raises(SpecError, match="pinnedSHA256"):
        parse_trust(trust)
