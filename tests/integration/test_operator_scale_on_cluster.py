# ruff: noqa: F811 - the fixtures of test_operator are imported and used by name
"""The operator's status, limits and API errors on a real API server (issue 13):
removed status keys disappear, big bundles go through ConfigMaps, the API server's
refusals are permanent with its own words, and /healthz reflects resync progress."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_operator import (  # noqa: F401 - fixtures are found by name
    DEADLINE,
    GROUP,
    NS,
    PLURAL,
    VERSION,
    client_secret,
    core,
    custom,
    get,
    make_trust,
    trust_body,
    uid,
    wait_for,
)

import certfactory
from dtrstack import Stack
from dtrtrust.kube.cluster import ApiRejected, Kube
from operatorproc import OperatorProcess
from tlsserver import Response, TLSServer, valid_now

pytestmark = [pytest.mark.kube, pytest.mark.registry]


def _metrics(operator: OperatorProcess) -> str:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    return str(urllib.request.urlopen(url, timeout=5).read().decode())


def test_removing_the_client_certificate_removes_it_from_status_and_metrics(
    custom: client.CustomObjectsApi,
    make_trust: Any,
    dtr_stack: Stack,
    dtrtrust_operator: OperatorProcess,
    client_secret: str,
) -> None:
    name = make_trust(
        trust_body(
            uid("noclient"), dtr_stack, clientCertificate={"secretRef": {"name": client_secret}}
        )
    )
    obj = wait_for(custom, name, "Ready", "True")
    assert "clientCertificate" in obj["status"]["bundle"]
    series = f'dtrtrust_certificate_expiry_timestamp_seconds{{kind="client",trust="{name}"}}'
    assert series in _metrics(dtrtrust_operator)

    # A merge patch with null removes the field from the spec.
    custom.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, name, {"spec": {"clientCertificate": None}}
    )
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        obj = get(custom, name)
        done = obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        if done and "clientCertificate" not in obj["status"]["bundle"]:
            break
        time.sleep(0.3)
    assert "clientCertificate" not in obj["status"]["bundle"], obj["status"]["bundle"]
    assert "ClientCertificateValid" not in {c["type"] for c in obj["status"]["conditions"]}
    assert series not in _metrics(dtrtrust_operator)


def test_a_200_kib_bundle_from_a_config_map_becomes_ready(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    make_trust: Any,
    dtr_stack: Stack,
) -> None:
    extra = b"".join(certfactory.make_ca(f"Org Root {i}").cert_pem for i in range(320))
    bundle = (dtr_stack.root_ca.read_bytes() + extra).decode()
    assert len(bundle) > 200 * 1024
    cm = uid("big-roots")
    core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=cm), data={"ca.crt": bundle})
    )
    try:
        name = make_trust(trust_body(uid("big"), dtr_stack, ca={"configMapRefs": [{"name": cm}]}))
        obj = wait_for(custom, name, "Ready", "True")
        assert len(obj["status"]["bundle"]["certificates"]) == 321
    finally:
        core.delete_namespaced_config_map(cm, NS)


def test_the_api_server_rejects_inline_pem_over_the_limit_with_the_advice(
    custom: client.CustomObjectsApi, dtr_stack: Stack
) -> None:
    body = trust_body(uid("toobig"), dtr_stack, ca={"pem": "x" * (64 * 1024 + 1)})
    with pytest.raises(ApiException) as caught:
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    assert caught.value.status == 422
    assert "spec.ca.pem" in str(caught.value.body)


def test_a_refused_api_call_is_permanent_and_carries_the_servers_message(
    custom: client.CustomObjectsApi, make_trust: Any, dtr_stack: Stack, kube_admin: Any
) -> None:
    name = make_trust(trust_body(uid("rejected"), dtr_stack))
    kube = Kube(kube_admin, NS)
    with pytest.raises(ApiRejected) as caught:
        kube.patch_trust_status(name, {"observedGeneration": "not a number"})
    message = str(caught.value)
    assert "422" in message
    assert "observedGeneration" in message  # the API server's own words
    assert "retrying will not help" in message


def test_healthz_reports_the_resync_probe(dtrtrust_operator: OperatorProcess) -> None:
    url = f"http://127.0.0.1:{dtrtrust_operator.metrics_port + 1}/healthz"
    answer = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert answer.get("resync") == "ok"


def test_a_registry_outage_with_an_unchanged_spec_keeps_the_trust_ready(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, make_trust: Any
) -> None:
    """12.9 on the real API server: /ca starts failing after the trust was Ready; after
    refreshInterval (1 minute, the minimum) the refresh fails, yet Ready stays True
    with the last good bundle, and CAAvailable says so."""
    root = certfactory.make_ca(uid("Outage Root"))
    leaf = certfactory.make_leaf("127.0.0.1", root, ip_sans=["127.0.0.1"], **valid_now())
    with TLSServer(
        chain_pem=leaf.cert_pem, key_pem=leaf.key_pem, routes={"/ca": Response(body=root.cert_pem)}
    ) as server:
        name = make_trust(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "DTRTrust",
                "metadata": {"name": uid("outage")},
                "spec": {
                    "registry": server.address,
                    "verify": {"tls": False},
                    "ca": {"fetch": {"pinnedSHA256": [root.fingerprint], "refreshInterval": "1m"}},
                },
            }
        )
        ready = wait_for(custom, name, "Ready", "True")
        published = ready["status"]["bundle"]["sha256"]
        good = core.read_namespaced_secret(f"dtrtrust-{name}", NS).data
        server.routes["/ca"] = Response(status=503, body=b"down for maintenance")
        obj = wait_for(custom, name, "CAAvailable", "False", "FetchFailed", deadline=150)
        conds = {c["type"]: c for c in obj["status"]["conditions"]}
        assert conds["Ready"]["status"] == "True", conds["Ready"]
        assert conds["BundleValid"]["status"] == "True"
        assert published in conds["CAAvailable"]["message"]
        assert obj["status"]["bundle"]["sha256"] == published
        assert core.read_namespaced_secret(f"dtrtrust-{name}", NS).data == good
