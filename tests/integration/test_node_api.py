"""The agent's API layer (:mod:`dtrtrust.kube.node`) on a real API server, under the
agent's RBAC from deploy/: lists come in pages and DTRTrusts come as metadata only, so
an agent on a cluster with 1,000 trusts never parses one answer of several megabytes
(CPython keeps the arenas of such a parse for the life of the process)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykube
import pytest
from kubernetes import client

import certfactory
from dtrtrust.kube import node as node_api
from operatorproc import OperatorProcess

pytestmark = pytest.mark.kube

GROUP, VERSION, PLURAL = "dtrtrust.io", "v1alpha1", "dtrtrusts"
NS = "dtrtrust-system"
CA = certfactory.make_ca("dtrtrust node api test root")


@pytest.fixture
def agent_api(
    dtrtrust_operator: OperatorProcess, service_account_kubeconfig: Any
) -> node_api.NodeApi:
    path: Path = service_account_kubeconfig(NS, "dtrtrust-agent")
    return node_api.NodeApi(NS, "no-such-node", pykube.KubeConfig.from_file(str(path)))


class _Counting:
    """Counts the GETs the NodeApi sends (below the layer under test: its HTTP client)."""

    def __init__(self, http: Any) -> None:
        self.http = http
        self.queries: list[dict[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)

    def get(self, **kwargs: Any) -> Any:
        self.queries.append(dict(kwargs.get("params") or {}))
        return self.http.get(**kwargs)


@pytest.fixture
def labelled_secrets(kube_admin: Any) -> Iterator[tuple[str, list[str]]]:
    core = client.CoreV1Api(kube_admin)
    run = uuid.uuid4().hex[:8]
    names = [f"page-{run}-{i}" for i in range(5)]
    for name in names:
        core.create_namespaced_secret(
            NS,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=name, labels={"node-api-test": run}),
                string_data={"x": name},
            ),
        )
    yield f"node-api-test={run}", names
    for name in names:
        core.delete_namespaced_secret(name, NS)


def test_the_agent_lists_secrets_in_pages_and_gets_every_one(
    agent_api: node_api.NodeApi,
    labelled_secrets: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    selector, names = labelled_secrets
    monkeypatch.setattr(node_api, "PAGE_SIZE", 2)
    counting = _Counting(agent_api.http)
    agent_api.http = counting
    listing = agent_api.list_secrets(selector)
    items = list(listing)
    rv = listing.resource_version
    assert sorted(i["metadata"]["name"] for i in items) == sorted(names)
    assert rv, "the list's resourceVersion is what the watch resumes from"
    assert [q.get("limit") for q in counting.queries] == ["2", "2", "2"]
    assert "continue" not in counting.queries[0]
    assert all(q.get("continue") for q in counting.queries[1:])


@pytest.fixture
def trust(kube_admin: Any) -> Iterator[dict[str, Any]]:
    custom = client.CustomObjectsApi(kube_admin)
    name = f"node-api-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DTRTrust",
        "metadata": {"name": name},
        "spec": {
            "registry": "dtr.node-api.example",
            "ca": {"pem": CA.cert_pem.decode()},
            "verify": {"tls": False},
            # Selects no node: the operator publishes, no agent writes.
            "nodeSelector": {"node-api-test": "none"},
        },
    }
    created = custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    yield created
    custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def test_the_agent_reads_dtrtrusts_as_metadata_without_spec_or_status(
    agent_api: node_api.NodeApi, trust: dict[str, Any], kube_admin: Any
) -> None:
    name, uid = trust["metadata"]["name"], trust["metadata"]["uid"]
    listing = agent_api.list_trusts()
    items = list(listing)
    rv = listing.resource_version
    mine = [i for i in items if i["metadata"]["name"] == name]
    assert len(mine) == 1
    assert mine[0]["metadata"]["uid"] == uid
    assert mine[0].get("kind") == "PartialObjectMetadata"
    assert "spec" not in mine[0], "inline PEM sent to every node"
    assert "status" not in mine[0]

    client.CustomObjectsApi(kube_admin).patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, name, {"metadata": {"labels": {"touched": "yes"}}}
    )
    for event in agent_api.watch_trusts(rv):
        if event.object.get("metadata", {}).get("name") != name:
            continue
        if (event.object["metadata"].get("labels") or {}).get("touched") != "yes":
            continue
        assert event.type == "MODIFIED"
        assert event.object["metadata"]["uid"] == uid
        assert "spec" not in event.object
        assert "status" not in event.object
        break
    else:
        pytest.fail("the watch ended without the label change of the trust")
