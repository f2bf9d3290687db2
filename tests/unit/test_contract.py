"""The wire names in dtrtrust.contract are the ones DESIGN.md fixes and the CRDs declare.

Every module reads its wire names from the contract, so a typo there would be consistent
everywhere and invisible to the other tests: these literals are the check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dtrtrust import contract

CRDS = Path(__file__).resolve().parents[2] / "crds"


def crd(plural: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / f"{contract.API_GROUP}_{plural}.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_fixed_names_are_the_ones_design_md_fixes() -> None:
    assert contract.API_VERSION == "dtrtrust.io/v1alpha1"
    assert (contract.KIND, contract.PLURAL) == ("DTRTrust", "dtrtrusts")
    assert contract.TRUST_LABEL == "dtrtrust.io/trust"
    assert contract.MANAGED_BY_SELECTOR == "app.kubernetes.io/managed-by=dtrtrust"
    assert contract.secret_name("dtr-prod") == "dtrtrust-dtr-prod"
    assert (contract.CA_KEY, contract.CLIENT_CERT_KEY, contract.CLIENT_KEY_KEY) == (
        "ca.crt",
        "client.cert",
        "client.key",
    )
    assert contract.TARGETS == ("docker", "containers", "containerd", "notary")
    assert contract.NOT_READY_TAINT == "dtrtrust.io/not-ready"
    assert [
        contract.CA_AVAILABLE,
        contract.BUNDLE_VALID,
        contract.CLIENT_CERTIFICATE_VALID,
        contract.REGISTRY_VERIFIED,
        contract.NODES_SYNCED,
        contract.NODES_VERIFIED,
        contract.READY,
    ] == [
        "CAAvailable",
        "BundleValid",
        "ClientCertificateValid",
        "RegistryVerified",
        "NodesSynced",
        "NodesVerified",
        "Ready",
    ]


def test_the_crds_declare_the_contracts_group_kinds_and_plurals() -> None:
    for kind, plural in (
        (contract.KIND, contract.PLURAL),
        (contract.NODE_REPORT_KIND, contract.NODE_REPORT_PLURAL),
    ):
        spec = crd(plural)["spec"]
        assert spec["group"] == contract.API_GROUP
        assert (spec["names"]["kind"], spec["names"]["plural"]) == (kind, plural)
        assert [v["name"] for v in spec["versions"]] == [contract.VERSION]


def test_report_states_are_the_ones_the_report_crd_enumerates() -> None:
    schema = crd(contract.NODE_REPORT_PLURAL)["spec"]["versions"][0]["schema"]
    trusts = schema["openAPIV3Schema"]["properties"]["status"]["properties"]["trusts"]
    assert set(trusts["items"]["properties"]["state"]["enum"]) == set(contract.REPORT_STATES)
