"""The one reconcile both front ends share: what it publishes and what it reports.

The network is the project's own ``Network`` protocol, stubbed here (the real one is
tested against local TLS servers in test_fetch/test_verify and end to end in e2e/).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import certfactory
from dtrtrust.core.bundle import compose_bundle
from dtrtrust.core.fingerprints import content_hash
from dtrtrust.core.network import FetchError, VerifyError
from dtrtrust.core.reconcile import Previous, RetiredCA, reconcile
from dtrtrust.core.spec import parse_trust
from stubnet import Sources, StubNetwork

NOW = certfactory.NOW
OLD = certfactory.make_ca("Registry Root 2029")
NEW = certfactory.make_ca("Registry Root 2030")
ORG = certfactory.make_ca("Org Root")
INTER = certfactory.make_ca("Org Issuing", parent=ORG, path_length=0)
CLIENT = certfactory.make_leaf("node", INTER, eku=["clientAuth"])
OTHER_KEY = certfactory.make_leaf("someone else", INTER, eku=["clientAuth"])


def trust(**spec: Any) -> Any:
    base: dict[str, Any] = {
        "registry": "dtr.example.com:4443",
        "ca": {"fetch": {"pinnedSHA256": [OLD.fingerprint, NEW.fingerprint]}},
    }
    base.update(spec)
    return parse_trust(
        {
            "apiVersion": "dtrtrust.io/v1alpha1",
            "kind": "DTRTrust",
            "metadata": {"name": "dtr", "generation": 1},
            "spec": base,
        }
    )


def status_of(outcome: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in outcome.conditions}


def test_everything_valid_publishes_the_bundle_and_the_client_pair() -> None:
    sources = Sources(secrets={"client": {"tls.crt": CLIENT.cert_pem, "tls.key": CLIENT.key_pem}})
    net = StubNetwork(OLD)
    out = reconcile(
        trust(clientCertificate={"secretRef": {"name": "client"}}),
        sources=sources,
        now=NOW,
        network=net,
    )
    assert out.publish is not None
    assert set(out.publish) == {"ca.crt", "client.cert", "client.key"}
    assert out.publish["ca.crt"] == compose_bundle([("x", OLD.cert_pem)], now=NOW).pem
    assert out.content_hash == content_hash(out.publish)
    assert all(s == "True" for s, _ in status_of(out).values())
    assert net.verified[0][2] is True  # /basic_info probed with the client pair


def test_identical_inputs_give_the_identical_content_hash() -> None:
    a = reconcile(trust(), sources=Sources(), now=NOW, network=StubNetwork(OLD))
    b = reconcile(
        trust(), sources=Sources(), now=NOW + dt.timedelta(hours=1), network=StubNetwork(OLD)
    )
    assert a.content_hash == b.content_hash


@pytest.mark.parametrize(
    ("error", "temporary"),
    [
        (VerifyError("Unreachable", "down"), True),
        (VerifyError("HostnameMismatch", "valid for x, not y"), False),
        (VerifyError("UnknownAuthority", "add the intermediate"), False),
    ],
)
def test_a_failed_verification_publishes_nothing(error: VerifyError, temporary: bool) -> None:
    out = reconcile(
        trust(), sources=Sources(), now=NOW, network=StubNetwork(OLD, verify_error=error)
    )
    assert out.publish is None
    assert status_of(out)["RegistryVerified"] == ("False", error.reason)
    assert out.temporary is temporary


def test_a_failed_fetch_publishes_nothing_and_is_retried_later() -> None:
    net = StubNetwork(OLD, fetch_error=FetchError("FetchFailed", "connection refused"))
    out = reconcile(trust(), sources=Sources(), now=NOW, network=net)
    assert out.publish is None
    assert out.temporary
    assert status_of(out)["CAAvailable"] == ("False", "FetchFailed")
    assert status_of(out)["BundleValid"][0] == "Unknown"
    assert net.verified == []


def test_wrong_pin_is_permanent_until_the_spec_changes() -> None:
    out = reconcile(
        trust(ca={"fetch": {"pinnedSHA256": [ORG.fingerprint]}}),
        sources=Sources(),
        now=NOW,
        network=StubNetwork(OLD),
    )
    assert status_of(out)["CAAvailable"] == ("False", "FingerprintMismatch")
    assert not out.temporary


def test_insecure_skip_pinning_is_accepted_but_says_so() -> None:
    out = reconcile(
        trust(ca={"fetch": {"insecureSkipPinning": True}}),
        sources=Sources(),
        now=NOW,
        network=StubNetwork(OLD),
    )
    assert out.publish is not None
    assert status_of(out)["CAAvailable"] == ("True", "Unpinned")
    assert out.pinned is False
    assert out.bundle_status(trust())["pinned"] is False


@pytest.mark.parametrize(
    "ca",
    [
        {"secretRefs": [{"name": "absent"}]},
        {"configMapRefs": [{"name": "absent"}]},
        {"configMapRefs": [{"name": "org", "key": "other.crt"}]},
    ],
    ids=["secret", "configmap", "configmap-key"],
)
def test_missing_sources_are_source_not_found(ca: dict[str, Any]) -> None:
    sources = Sources(config_maps={"org": {"ca.crt": ORG.cert_pem.decode()}})
    out = reconcile(trust(ca=ca), sources=sources, now=NOW, network=StubNetwork(OLD))
    assert status_of(out)["CAAvailable"] == ("False", "SourceNotFound")
    assert out.publish is None


def test_inline_pem_and_references_are_composed_with_the_fetched_ca() -> None:
    sources = Sources(
        secrets={"org": {"ca.crt": ORG.cert_pem}},
        config_maps={"inter": {"ca.crt": INTER.cert_pem.decode()}},
    )
    spec = trust(
        ca={
            "fetch": {"pinnedSHA256": [OLD.fingerprint]},
            "pem": ORG.cert_pem.decode(),
            "secretRefs": [{"name": "org"}],
            "configMapRefs": [{"name": "inter"}],
        }
    )
    out = reconcile(spec, sources=sources, now=NOW, network=StubNetwork(OLD))
    assert out.bundle is not None
    assert {c.sha256 for c in out.bundle.certificates} == {
        OLD.fingerprint,
        ORG.fingerprint,
        INTER.fingerprint,
    }


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        (None, "SecretNotFound"),
        ({"tls.crt": CLIENT.cert_pem}, "SecretNotFound"),
        ({"tls.crt": CLIENT.cert_pem, "tls.key": OTHER_KEY.key_pem}, "KeyMismatch"),
    ],
)
def test_client_certificate_problems_publish_nothing(
    secret: dict[str, bytes] | None, reason: str
) -> None:
    sources = Sources(secrets={"client": secret} if secret else {})
    out = reconcile(
        trust(clientCertificate={"secretRef": {"name": "client"}}),
        sources=sources,
        now=NOW,
        network=StubNetwork(OLD),
    )
    assert status_of(out)["ClientCertificateValid"] == ("False", reason)
    assert status_of(out)["RegistryVerified"][0] == "Unknown"
    assert out.publish is None


def test_a_client_override_replaces_the_secret_reference() -> None:
    out = reconcile(
        trust(),
        sources=Sources(),
        now=NOW,
        network=StubNetwork(OLD),
        client_override=(CLIENT.cert_pem, CLIENT.key_pem),
    )
    assert out.publish is not None
    assert out.publish["client.key"] == CLIENT.key_pem


def test_verification_can_be_switched_off_explicitly() -> None:
    net = StubNetwork(OLD, verify_error=VerifyError("Unreachable", "down"))
    out = reconcile(trust(verify={"tls": False}), sources=Sources(), now=NOW, network=net)
    assert out.publish is not None
    assert status_of(out)["RegistryVerified"] == ("True", "VerificationDisabled")
    assert net.verified == []


def _published(network: StubNetwork, when: dt.datetime, previous: Previous | None = None) -> Any:
    return reconcile(trust(), sources=Sources(), now=when, network=network, previous=previous)


def test_a_rotated_ca_keeps_the_previous_one_for_the_overlap_then_drops_it() -> None:
    first = _published(StubNetwork(served=OLD), NOW)
    previous = Previous(bundle_pem=first.publish["ca.crt"], fetched=first.fetched)

    rotated = _published(StubNetwork(served=NEW), NOW + dt.timedelta(hours=1), previous)
    assert rotated.bundle is not None
    assert {c.sha256 for c in rotated.bundle.certificates} == {OLD.fingerprint, NEW.fingerprint}
    assert rotated.retired == (RetiredCA(OLD.fingerprint, NOW + dt.timedelta(hours=1)),)
    status = rotated.bundle_status(trust())
    assert status["previousCAs"][0]["removeAfter"] == "2030-01-08T01:00:00Z"

    later = Previous(
        bundle_pem=rotated.publish["ca.crt"], fetched=rotated.fetched, retired=rotated.retired
    )
    still = _published(StubNetwork(served=NEW), NOW + dt.timedelta(days=7), later)
    assert {c.sha256 for c in still.bundle.certificates} == {OLD.fingerprint, NEW.fingerprint}
    dropped = _published(StubNetwork(served=NEW), NOW + dt.timedelta(days=7, hours=2), later)
    assert {c.sha256 for c in dropped.bundle.certificates} == {NEW.fingerprint}
    assert dropped.retired == ()


def test_a_previous_ca_missing_from_the_last_bundle_is_reported_not_invented() -> None:
    previous = Previous(bundle_pem=ORG.cert_pem, fetched=(OLD.fingerprint,))
    out = _published(StubNetwork(served=NEW), NOW, previous)
    assert out.bundle is not None
    assert {c.sha256 for c in out.bundle.certificates} == {NEW.fingerprint}
    assert any(OLD.fingerprint in w for w in out.warnings)


def test_previous_state_round_trips_through_the_status() -> None:
    first = _published(StubNetwork(served=OLD), NOW)
    rotated = _published(
        StubNetwork(served=NEW),
        NOW,
        Previous(bundle_pem=first.publish["ca.crt"], fetched=first.fetched),
    )
    back = Previous.from_status(rotated.bundle_status(trust()), rotated.publish["ca.crt"])
    assert back.fetched == (NEW.fingerprint,)
    assert back.retired == rotated.retired


def test_an_alias_the_certificate_does_not_name_is_a_hostname_mismatch() -> None:
    net = StubNetwork(OLD, names=("dtr.example.com", "10.0.0.5"))
    ok = reconcile(trust(aliases=["10.0.0.5:4443"]), sources=Sources(), now=NOW, network=net)
    assert ok.publish is not None

    out = reconcile(
        trust(aliases=["10.0.0.5:4443", "10.0.0.9:4443"]), sources=Sources(), now=NOW, network=net
    )
    assert out.publish is None
    cond = next(c for c in out.conditions if c.type == "RegistryVerified")
    assert (cond.status, cond.reason) == ("False", "HostnameMismatch")
    assert "10.0.0.9:4443" in cond.message
    assert "10.0.0.5:4443" not in cond.message.split("alias(es)")[1]
