"""The operator at scale: reads from its indexes, queues per trust, writes only what
changed, and its status and metrics describe the present (controller level; the
Kubernetes API is our own ``Kube`` layer, recorded below the controller)."""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes import client

import certfactory
from dtrtrust.core.status import is_ready
from dtrtrust.kube.cluster import ApiUnavailable, ExistingSecret, Kube, existing_secret
from dtrtrust.operator import metrics
from dtrtrust.operator.config import Config
from dtrtrust.operator.controller import Controller
from dtrtrust.operator.state import IndexedState
from stubnet import StubNetwork

ROOT = certfactory.make_ca("Scale Root")
NS = "dtrtrust-system"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api_client(port: int) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = f"https://127.0.0.1:{port}"
    cfg.verify_ssl = False
    cfg.retries = 0
    return client.ApiClient(cfg)


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class Index(dict[Any, list[Any]]):
    """A kopf index as the controller sees it: key -> store of values."""

    def put(self, key: Any, value: Any) -> None:
        self[key] = [value]


class RecordingKube(Kube):
    """Our Kube layer with every write recorded and fed back into the indexes (as the
    watches would); any read reaches an address nobody listens on and fails."""

    def __init__(self, state: IndexedState) -> None:
        super().__init__(_api_client(_closed_port()), NS)
        self.state = state
        self.writes: list[tuple[str, str]] = []

    def write_bundle_secret(self, body: Mapping[str, Any], *, exists: bool) -> None:
        self.writes.append(("secret", body["metadata"]["name"]))
        assert isinstance(self.state.secrets, Index)
        self.state.secrets.put(body["metadata"]["name"], existing_secret(body))

    def patch_trust_status(self, name: str, patch: Mapping[str, Any]) -> None:
        self.writes.append(("status", name))
        body = next(iter(self.state.trusts[name]))
        body["status"] = merge(copy.deepcopy(body.get("status") or {}), patch)  # a new object

    def post_event(self, *args: Any, **kwargs: Any) -> None:
        self.writes.append(("event", str(args[2])))


def trust(name: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": generation},
        "spec": {
            "registry": "dtr.example.com",
            "ca": {"pem": ROOT.cert_pem.decode()},
            "verify": {"clientAuth": False},
            **spec,
        },
    }


@pytest.fixture
def world() -> tuple[Controller, IndexedState, RecordingKube]:
    state = IndexedState(
        trusts=Index(), secrets=Index(), config_maps=Index(), nodes=Index(), reports=Index()
    )
    kube = RecordingKube(state)
    net = StubNetwork(ROOT, names=("dtr.example.com",))
    ctrl = Controller(Config(namespace=NS), kube, network=net, state=state)
    return ctrl, state, kube


def put_trust(state: IndexedState, body: dict[str, Any]) -> None:
    assert isinstance(state.trusts, Index)
    state.trusts.put(body["metadata"]["name"], body)


def test_a_reconcile_with_nothing_changed_makes_no_api_request(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, state, kube = world
    for i in range(20):
        put_trust(state, trust(f"t{i}"))
    asyncio.run(ctrl.reconcile_many(state.trust_names()))
    assert {w[0] for w in kube.writes} == {"secret", "status", "event"}
    kube.writes.clear()
    # Every read would fail (nobody listens): a clean second round proves none happened.
    results = [asyncio.run(ctrl.reconcile(n)) for n in state.trust_names()]
    assert {r.kind for r in results} == {"ready"}
    assert kube.writes == []


def test_desired_nodes_follow_the_node_index_and_the_empty_value_means_equals_empty(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, state, _ = world
    assert isinstance(state.nodes, Index)
    linux = {"kubernetes.io/os": "linux"}
    state.nodes.put("a", {**linux, "gpu": ""})
    state.nodes.put("b", {**linux, "gpu": "yes"})
    state.nodes.put("c", {"kubernetes.io/os": "windows", "gpu": ""})
    assert state.node_names({"gpu": ""}) == ["a"]
    assert state.node_names({}) == ["a", "b"]
    state.nodes.put("d", dict(linux))
    ctrl.node_changed("d", dict(linux))  # the Node event bumps the version
    assert state.node_names({}) == ["a", "b", "d"]


def test_report_events_queue_only_the_trusts_whose_entry_changed(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, _, _ = world

    def report(**entries: str) -> dict[str, Any]:
        return {
            "metadata": {"name": "n1"},
            "status": {
                "nodeName": "n1",
                "trusts": [
                    {"name": t, "contentHash": h, "state": "Synced"} for t, h in entries.items()
                ],
            },
        }

    ctrl.report_changed(report(a="sha256:1", b="sha256:1"))
    assert set(ctrl._dirty) == {"a", "b"}
    ctrl._dirty.clear()
    ctrl.report_changed(report(a="sha256:1", b="sha256:2"))  # only b's entry changed
    assert set(ctrl._dirty) == {"b"}
    ctrl._dirty.clear()
    ctrl.report_changed(report(a="sha256:1", b="sha256:2"))  # the same report again
    assert set(ctrl._dirty) == set()
    ctrl.report_changed(report(a="sha256:1"), deleted=True)  # the node's report went
    assert set(ctrl._dirty) == {"a", "b"}


def test_a_node_heartbeat_queues_nothing_but_a_label_change_queues_every_trust(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, state, _ = world
    put_trust(state, trust("x"))
    put_trust(state, trust("y"))
    ctrl.node_changed("n1", {"role": "a"})
    ctrl._dirty.clear()
    ctrl.node_changed("n1", {"role": "a"})
    assert set(ctrl._dirty) == set()
    ctrl.node_changed("n1", {"role": "b"})
    assert set(ctrl._dirty) == {"x", "y"}


def test_a_removed_status_key_is_sent_as_null_and_disappears(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, state, _ = world
    pair = certfactory.make_leaf(
        "client",
        ROOT,
        eku=("clientAuth",),
        not_before=certfactory.ROOT_NOT_BEFORE,  # the controller checks against the clock
        not_after=certfactory.ROOT_NOT_AFTER,
    )
    assert isinstance(state.secrets, Index)
    state.secrets.put(
        "client",
        ExistingSecret(
            data={"tls.crt": pair.cert_pem, "tls.key": pair.key_pem},
            annotations={},
            labels={},
            owner_uids=(),
        ),
    )
    body = trust("c", clientCertificate={"secretRef": {"name": "client"}})
    put_trust(state, body)
    asyncio.run(ctrl.reconcile("c"))
    assert "clientCertificate" in body["status"]["bundle"]
    assert "c" in {s.samples[0].labels["trust"] for s in _client_expiry(ctrl)}

    body["spec"].pop("clientCertificate")
    body["metadata"]["generation"] = 2
    asyncio.run(ctrl.reconcile("c"))
    assert "clientCertificate" not in body["status"]["bundle"]
    assert _client_expiry(ctrl) == []  # the series went with the certificate


def _client_expiry(ctrl: Controller) -> list[Any]:
    families = metrics.trust_metrics(ctrl.statuses)
    expiry = next(f for f in families if f.name == metrics.CERT_EXPIRY)
    return [f for f in [expiry] if any(s.labels["kind"] == "client" for s in f.samples)]


def test_a_deleted_trust_leaves_no_series(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, state, _ = world
    put_trust(state, trust("gone"))
    asyncio.run(ctrl.reconcile("gone"))
    names = {s.labels["trust"] for f in metrics.trust_metrics(ctrl.statuses) for s in f.samples}
    assert names == {"gone"}
    assert isinstance(state.trusts, Index)
    del state.trusts["gone"]
    asyncio.run(ctrl.resync_once())
    assert [s for f in metrics.trust_metrics(ctrl.statuses) for s in f.samples] == []


def test_the_condition_gauge_is_one_for_the_current_status_only(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, state, _ = world
    put_trust(state, trust("g"))
    asyncio.run(ctrl.reconcile("g"))
    family = next(
        f for f in metrics.trust_metrics(ctrl.statuses) if f.name == "dtrtrust_trust_condition"
    )
    ready = {s.labels["status"]: s.value for s in family.samples if s.labels["type"] == "Ready"}
    assert ready == {"True": 1.0, "False": 0.0, "Unknown": 0.0}


def test_a_deleted_bundle_secret_is_restored_from_memory_while_the_registry_is_down(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    from dtrtrust.core.network import FetchError

    ctrl, state, kube = world
    body = trust("r", ca={"fetch": {"pinnedSHA256": [ROOT.fingerprint]}})
    put_trust(state, body)
    assert asyncio.run(ctrl.reconcile("r", fresh=True)).kind == "ready"
    assert isinstance(state.secrets, Index)
    published = next(iter(state.secrets["dtrtrust-r"]))
    del state.secrets["dtrtrust-r"]
    assert isinstance(ctrl.network, StubNetwork)
    ctrl.network.fetch_error = FetchError("FetchFailed", "connection refused")
    kube.writes.clear()
    ctrl.secret_changed(
        "dtrtrust-r", {"app.kubernetes.io/managed-by": "dtrtrust", "dtrtrust.io/trust": "r"}
    )
    assert set(ctrl._dirty) == {"r"}
    asyncio.run(ctrl.reconcile("r", fresh=True))
    assert ("secret", "dtrtrust-r") in kube.writes
    assert next(iter(state.secrets["dtrtrust-r"])).data == published.data


def test_forgetting_a_trust_keeps_the_lock_a_reconcile_holds(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, _, _ = world

    async def scenario() -> bool:
        held = ctrl._lock("t")
        ctrl._users["t"] = 1  # as reconcile() does before it waits for the lock
        async with held:
            ctrl.forget("t")
            return ctrl._lock("t") is held

    assert asyncio.run(scenario())


def test_the_liveness_problem_appears_after_three_resync_periods_without_a_round(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, _, _ = world
    ctrl.config = Config(namespace=NS, resync_seconds=10)
    assert ctrl.progress_problem() is None
    ctrl.last_resync -= 31  # as if the last round completed 31 s ago
    assert "no resync round completed" in (ctrl.progress_problem() or "")


def test_an_api_server_that_accepts_and_never_answers_times_out() -> None:
    """A half-open connection: the server accepts, never answers. Every call has a
    (connect, read) deadline, so the call fails as ApiUnavailable instead of hanging."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        kube = Kube(_api_client(port), NS, timeout=(1.0, 1.0))
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                kube.get_trust("dtr")
                outcome.append(None)
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(60)  # a bounded wait: a call without a deadline never returns
        assert outcome, "the API call did not return: no timeout"
        assert isinstance(outcome[0], ApiUnavailable)


def test_the_namespace_flag_beats_the_environment() -> None:
    import argparse

    from dtrtrust.operator import operator_environment

    env = {"DTRTRUST_NAMESPACE": "from-env", "DTRTRUST_METRICS_PORT": "1"}
    operator_environment(argparse.Namespace(namespace="from-flag", metrics_port=9), env)
    assert Config.from_env(env).namespace == "from-flag"
    assert Config.from_env(env).metrics_port == 9


def test_a_registry_outage_with_an_unchanged_spec_keeps_ready_true(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    from dtrtrust.core.network import FetchError

    ctrl, state, kube = world
    body = trust("out", ca={"fetch": {"pinnedSHA256": [ROOT.fingerprint]}})
    put_trust(state, body)
    assert asyncio.run(ctrl.reconcile("out", fresh=True)).kind == "ready"
    published = body["status"]["bundle"]["sha256"]
    assert isinstance(ctrl.network, StubNetwork)
    ctrl.network.fetch_error = FetchError("FetchFailed", "connection refused")
    kube.writes.clear()
    asyncio.run(ctrl.reconcile("out", fresh=True))
    conds = {c["type"]: c for c in body["status"]["conditions"]}
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("True", "Ready")
    assert (conds["CAAvailable"]["status"], conds["CAAvailable"]["reason"]) == (
        "False",
        "FetchFailed",
    )
    assert "refresh failing since" in conds["CAAvailable"]["message"]
    assert published in conds["CAAvailable"]["message"]
    assert conds["BundleValid"]["status"] == conds["RegistryVerified"]["status"] == "True"
    assert ("event", "FetchFailed") in kube.writes  # a Warning, though Ready stays True
    # Nothing changes on the next failing round: no status write.
    kube.writes.clear()
    asyncio.run(ctrl.reconcile("out", fresh=True))
    assert kube.writes == []


def test_a_spec_change_that_cannot_be_verified_is_not_ready(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    from dtrtrust.core.network import FetchError

    ctrl, state, _ = world
    body = trust("chg", ca={"fetch": {"pinnedSHA256": [ROOT.fingerprint]}})
    put_trust(state, body)
    asyncio.run(ctrl.reconcile("chg", fresh=True))
    assert isinstance(ctrl.network, StubNetwork)
    ctrl.network.fetch_error = FetchError("FetchFailed", "connection refused")
    body["spec"]["aliases"] = ["dtr2.example.com"]
    body["metadata"]["generation"] = 2
    asyncio.run(ctrl.reconcile("chg", fresh=True))
    conds = {c["type"]: c for c in body["status"]["conditions"]}
    assert conds["Ready"]["status"] == "False"


def test_a_warning_is_logged_once_not_on_every_reconcile(
    world: tuple[Controller, IndexedState, RecordingKube], caplog: pytest.LogCaptureFixture
) -> None:
    import datetime as dt

    ctrl, state, _ = world
    now = dt.datetime.now(dt.UTC)
    soon = certfactory.make_ca(
        "Expiring Root",
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=10),
    )
    body = trust("warn")
    body["spec"]["ca"] = {"pem": ROOT.cert_pem.decode() + soon.cert_pem.decode()}
    put_trust(state, body)
    with caplog.at_level("INFO", logger="dtrtrust.operator"):
        for _ in range(3):
            asyncio.run(ctrl.reconcile("warn"))
    expiring = [r for r in caplog.records if "Expiring Root" in r.getMessage()]
    assert len(expiring) == 1, [r.getMessage() for r in caplog.records]


def _node_report(node: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": node}, "status": {"nodeName": node, "trusts": [entry]}}


def test_nodes_verified_comes_from_the_report_index_without_an_api_request(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    """The probes are read from the report index (every read through the API would
    fail here): a passed probe of the published content makes NodesVerified True, a
    failed one makes it False with the node's reason."""
    ctrl, state, _ = world
    assert isinstance(state.nodes, Index)
    assert isinstance(state.reports, Index)
    state.nodes.put("n1", {"kubernetes.io/os": "linux"})
    put_trust(state, trust("v"))
    assert asyncio.run(ctrl.reconcile("v")).kind == "waiting"
    published = next(iter(state.trusts["v"]))["status"]["bundle"]["sha256"]

    def probed(**probe: Any) -> str | None:
        entry = {"name": "v", "contentHash": published, "state": "Synced", "probe": probe}
        assert isinstance(state.reports, Index)
        state.reports.put("n1", ctrl.report_changed(_node_report("n1", entry)))
        asyncio.run(ctrl.reconcile("v"))
        status = next(iter(state.trusts["v"]))["status"]
        cond = next(c for c in status["conditions"] if c["type"] == "NodesVerified")
        assert status["nodes"]["verified"] == (1 if cond["status"] == "True" else 0)
        return str(cond["status"]) + "/" + str(cond["reason"])

    ok = {"reachable": True, "tlsVerified": True, "clientCertificate": "NotConfigured"}
    assert probed(**ok, checkedAt="2026-12-01T00:00:00Z") == "True/Verified"
    assert is_ready(next(iter(state.trusts["v"]))["status"])
    unreachable = {"reachable": False, "tlsVerified": False, "clientCertificate": "NotConfigured"}
    assert (
        probed(**unreachable, checkedAt="2026-12-01T00:10:00Z", reason="Unreachable")
        == "False/Unreachable"
    )


def test_a_re_probe_with_the_same_result_queues_nothing_but_a_new_result_queues_the_trust(
    world: tuple[Controller, IndexedState, RecordingKube],
) -> None:
    ctrl, _, _ = world
    ok = {"reachable": True, "tlsVerified": True, "clientCertificate": "NotConfigured"}

    def report(**probe: Any) -> dict[str, Any]:
        entry = {"name": "p", "contentHash": "sha256:1", "state": "Synced", "probe": probe}
        return _node_report("n1", entry)

    ctrl.report_changed(report(**ok, checkedAt="2026-12-01T00:00:00Z"))
    assert set(ctrl._dirty) == {"p"}
    ctrl._dirty.clear()
    ctrl.report_changed(report(**ok, checkedAt="2026-12-01T00:10:00Z"))  # the same result
    assert set(ctrl._dirty) == set()
    ctrl.report_changed(
        report(**{**ok, "reachable": False}, checkedAt="2026-12-01T00:20:00Z", reason="Unreachable")
    )
    assert set(ctrl._dirty) == {"p"}
