"""The node agent's decisions, as pure functions and on a real host root under tmp_path.

No API server: the Agent is driven through its in-memory view (what the watchers would
have seen) and writes through the real writer."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dtrtrust.agent.config import Config
from dtrtrust.agent.decisions import (
    Bundle,
    BundleError,
    decide,
    parse_bundle,
    sync_state,
    taint_blockers,
)
from dtrtrust.agent.loop import REMOVED_TTL_SECONDS, Agent, backoff
from dtrtrust.agent.policies import load_policies
from dtrtrust.agent.report import TrustReport, report_body, same_report
from dtrtrust.contract import CONFLICT, ERROR, NOT_EFFECTIVE, REMOVED, RETAINED, SYNCED
from dtrtrust.core.fingerprints import content_hash
from dtrtrust.core.labels import selects
from dtrtrust.node import writer
from dtrtrust.node.effective import Finding
from dtrtrust.operator.objects import bundle_secret

# PEM-shaped (the agent checks the shape, never loads cryptography): base64 bodies.
CA = b"-----BEGIN CERTIFICATE-----\nQ0Egb25l\n-----END CERTIFICATE-----\n"
CA2 = b"-----BEGIN CERTIFICATE-----\nQ0EgdHdv\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nQ0xJRU5U\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"
LINUX = {"kubernetes.io/os": "linux"}
DEFAULT_FILES = {"ca.crt": CA, "client.cert": CERT, "client.key": KEY}
HASH = content_hash(DEFAULT_FILES)


def secret(
    trust: str = "prod",
    *,
    hash_: str | None = None,
    registries: str = "dtr.example.com:4443",
    targets: str = "docker",
    selector: Mapping[str, str] | None = None,
    policy: str = "Delete",
    data: Mapping[str, bytes] | None = None,
    labels: Mapping[str, str] | None = None,
    uid: str = "uid-1",
    probe: str | None = None,
) -> dict[str, Any]:
    files = DEFAULT_FILES if data is None else data
    body = {
        "metadata": {
            "name": f"dtrtrust-{trust}",
            "ownerReferences": [
                {
                    "apiVersion": "dtrtrust.io/v1alpha1",
                    "kind": "DTRTrust",
                    "name": trust,
                    "uid": uid,
                }
            ],
            "labels": dict(labels) if labels is not None else {"dtrtrust.io/trust": trust},
            "annotations": {
                "dtrtrust.io/content-hash": content_hash(files) if hash_ is None else hash_,
                "dtrtrust.io/registries": registries,
                "dtrtrust.io/targets": targets,
                "dtrtrust.io/node-selector": json.dumps(dict(selector or {})),
                "dtrtrust.io/deletion-policy": policy,
            },
        },
        "data": {k: base64.b64encode(v).decode() for k, v in files.items()},
    }
    if probe is not None:
        body["metadata"]["annotations"]["dtrtrust.io/node-probe"] = probe  # type: ignore[index]
    return body


def test_bundle_parsed_from_a_secret_the_operator_built() -> None:
    from dtrtrust.core.spec import parse_trust

    spec = parse_trust(
        {
            "apiVersion": "dtrtrust.io/v1alpha1",
            "kind": "DTRTrust",
            "metadata": {"name": "prod", "generation": 1},
            "spec": {
                "registry": "dtr.example.com:4443",
                "aliases": ["10.0.0.5:4443"],
                "ca": {"pem": CA.decode()},
                "targets": ["docker", "containerd"],
                "nodeSelector": {"role": "build"},
                "deletionPolicy": "Retain",
            },
        }
    )
    published = content_hash({"ca.crt": CA})
    body = bundle_secret(spec, "uid-1", {"ca.crt": CA}, published, "dtrtrust-system")
    bundle = parse_bundle(body)
    assert bundle == Bundle(
        trust="prod",
        content_hash=published,
        addresses=("dtr.example.com:4443", "10.0.0.5:4443"),
        targets=("docker", "containerd"),
        selector={"role": "build"},
        policy="Retain",
        ca=CA,
        client=None,
        owner_uid="uid-1",
        probe_interval=3600.0,  # the default refreshInterval: the probe is on by default
    )


def test_verify_nodes_false_turns_the_node_probe_off_in_the_bundle_secret() -> None:
    from dtrtrust.core.spec import parse_trust

    spec = parse_trust(
        {
            "apiVersion": "dtrtrust.io/v1alpha1",
            "kind": "DTRTrust",
            "metadata": {"name": "prod", "generation": 1},
            "spec": {
                "registry": "dtr.example.com:4443",
                "ca": {"pem": CA.decode()},
                "verify": {"nodes": False},
            },
        }
    )
    published = content_hash({"ca.crt": CA})
    body = bundle_secret(spec, "uid-1", {"ca.crt": CA}, published, "dtrtrust-system")
    assert parse_bundle(body).probe_interval is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"hash_": ""}, "content-hash"),
        ({"registries": ""}, "names no registry"),
        ({"registries": "Upper.example.com"}, "uppercase"),
        ({"registries": "../etc"}, "path separator"),
        ({"targets": "docker,rkt"}, "unknown target 'rkt'"),
        ({"policy": "Keep"}, "Delete or Retain"),
        ({"data": {"client.cert": CERT, "client.key": KEY}}, "no ca.crt"),
        ({"data": {"ca.crt": CA, "client.key": KEY}}, "only one of"),
        ({"labels": {}}, "no dtrtrust.io/trust label"),
        ({"hash_": "sha256:" + "0" * 64}, "does not match its dtrtrust.io/content-hash"),
        (
            {"data": {**DEFAULT_FILES, "extra": b"smuggled"}, "hash_": HASH},
            "does not match its dtrtrust.io/content-hash",
        ),
        ({"data": {"ca.crt": b"garbage\x00\xff"}}, "ca.crt is not PEM certificates"),
        ({"data": {"ca.crt": CA + b"trailing text"}}, "text outside the PEM CERTIFICATE"),
        ({"data": {"ca.crt": CA.replace(b"Q0Egb25l", b"Q0E!b25l")}}, "not PEM certificates"),
        ({"data": {"ca.crt": KEY}}, "ca.crt is not PEM certificates"),
        (
            {"data": {"ca.crt": CA, "client.cert": b"not a cert", "client.key": KEY}},
            "client.cert is not PEM certificates",
        ),
    ],
)
def test_unusable_bundle_secret_is_rejected_with_what_is_wrong(
    kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(BundleError, match=fragment) as caught:
        parse_bundle(secret(**kwargs))
    assert b"SECRET-KEY-MATERIAL" not in str(caught.value).encode()


def test_bad_selector_json_is_rejected() -> None:
    body = secret()
    body["metadata"]["annotations"]["dtrtrust.io/node-selector"] = "{role: build"
    with pytest.raises(BundleError, match="not JSON"):
        parse_bundle(body)


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, LINUX, True),
        ({}, {}, False),  # not a Linux node
        ({}, {"kubernetes.io/os": "windows"}, False),
        ({"role": "build"}, {**LINUX, "role": "build"}, True),
        ({"role": "build"}, {**LINUX, "role": "web"}, False),
        ({"role": "build"}, LINUX, False),
        # Kubernetes semantics: an empty value means "equals the empty string".
        ({"gpu": ""}, {**LINUX, "gpu": "anything"}, False),
        ({"gpu": ""}, {**LINUX, "gpu": ""}, True),
        ({"gpu": ""}, LINUX, False),
        ({"kubernetes.io/os": "linux", "zone": "a"}, {**LINUX, "zone": "a"}, True),
    ],
)
def test_node_selection_adds_linux_to_the_trusts_selector(
    selector: dict[str, str], labels: dict[str, str], expected: bool
) -> None:
    assert selects(selector, labels) is expected


# --------------------------------------------------------------------------- decisions


def _bundle(trust: str = "prod", **kwargs: Any) -> Bundle:
    return parse_bundle(secret(trust, **kwargs))


@pytest.mark.parametrize(
    ("bundles", "labels", "owned", "policies", "expected"),
    [
        # selected: sync, whether or not files exist yet
        ({"prod": _bundle()}, LINUX, set(), {}, [("prod", "sync")]),
        ({"prod": _bundle()}, LINUX, {"prod"}, {}, [("prod", "sync")]),
        # no longer selected: remove what is owned, nothing when nothing is owned
        ({"prod": _bundle(selector={"role": "x"})}, LINUX, {"prod"}, {}, [("prod", "remove")]),
        ({"prod": _bundle(selector={"role": "x"})}, LINUX, set(), {}, []),
        # deselection keeps files with Retain, as deletion does (the CRD's wording)
        (
            {"prod": _bundle(selector={"role": "x"}, policy="Retain")},
            LINUX,
            {"prod"},
            {"prod": "Retain"},
            [("prod", "retain")],
        ),
        # Secret gone: the remembered policy decides; Delete when never seen
        ({}, LINUX, {"old"}, {"old": "Delete"}, [("old", "remove")]),
        ({}, LINUX, {"old"}, {}, [("old", "remove")]),
        ({}, LINUX, {"old"}, {"old": "Retain"}, [("old", "retain")]),
        # unusable Secret: report, touch nothing
        ({"bad": BundleError("broken")}, LINUX, {"bad"}, {}, [("bad", "error")]),
    ],
)
def test_decide_per_trust(
    bundles: dict[str, Bundle | BundleError],
    labels: dict[str, str],
    owned: set[str],
    policies: dict[str, str],
    expected: list[tuple[str, str]],
) -> None:
    # Every trust with a Secret exists; the others are gone.
    existing = {t: "uid-1" for t in bundles}
    got = [(a.trust, a.kind) for a in decide(bundles, labels, owned, policies, None, existing)]
    assert got == expected


@pytest.mark.parametrize(
    ("bundles", "existing", "file_uids", "expected"),
    [
        # Secret gone while its DTRTrust exists: touch nothing, report it
        ({}, {"prod": "uid-1"}, {"prod": "uid-1"}, "missing"),
        ({}, {"prod": "uid-1"}, {}, "missing"),
        # the DTRTrusts are not known yet (not listed, unreadable): the same
        ({}, None, {}, "missing"),
        # the DTRTrust was deleted and created again (another uid): the old one is gone
        ({}, {"prod": "uid-2"}, {"prod": "uid-1"}, "remove"),
        # the DTRTrust is gone while its Secret waits for garbage collection
        ({"prod": _bundle()}, {}, {}, "remove"),
        # a Secret without a readable DTRTrust list still syncs (only removal waits)
        ({"prod": _bundle()}, None, {}, "sync"),
    ],
)
def test_only_a_trust_known_to_be_gone_loses_its_files(
    bundles: dict[str, Bundle | BundleError],
    existing: dict[str, str] | None,
    file_uids: dict[str, str],
    expected: str,
) -> None:
    got = decide(bundles, LINUX, {"prod"}, {}, None, existing, file_uids)
    assert [(a.trust, a.kind) for a in got] == [("prod", expected)]


def test_decide_limited_to_dirty_trusts_leaves_others_alone() -> None:
    bundles = {"a": _bundle("a"), "b": _bundle("b")}
    got = decide(bundles, LINUX, {"gone"}, {}, trusts={"b"})
    assert [(a.trust, a.kind) for a in got] == [("b", "sync")]


# --------------------------------------------------------------------------- reports


def test_writer_conflict_becomes_a_conflict_report_with_the_path() -> None:
    bundle = _bundle(targets="containerd")
    result = writer.SyncResult(
        dirs=[
            writer.DirResult(
                "containerd",
                "dtr.example.com:4443",
                "conflict",
                "hosts.toml belongs to another tool",
                "etc/containerd/certs.d/dtr.example.com:4443",
            )
        ]
    )
    report = sync_state(bundle, result)
    assert report.state == CONFLICT
    assert "etc/containerd/certs.d/dtr.example.com:4443" in report.message


@pytest.mark.parametrize(
    ("findings", "state"),
    [
        ([], SYNCED),
        ([Finding("containers", "marked insecure", blocking=False)], SYNCED),
        ([Finding("containerd", "containerd will not read")], NOT_EFFECTIVE),
        (
            [Finding("containers", "insecure", blocking=False), Finding("docker", "loopback")],
            NOT_EFFECTIVE,
        ),
    ],
)
def test_a_blocking_finding_is_not_effective_and_a_warning_stays_synced(
    findings: list[Finding], state: str
) -> None:
    report = sync_state(_bundle(targets="docker,containerd"), writer.SyncResult(), findings)
    assert report.state == state
    for f in findings:
        assert f.message in report.message


def test_report_is_owned_by_the_node_and_unchanged_content_needs_no_write() -> None:
    trusts = [TrustReport("b", "h2", ERROR, "x"), TrustReport("a", "h1", SYNCED)]
    body = report_body(
        node_name="n1", node_uid="uid-n1", namespace="ns", trusts=trusts, last_change="t1"
    )
    assert body["metadata"]["ownerReferences"][0] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "n1",
        "uid": "uid-n1",
        "blockOwnerDeletion": False,
    }
    assert [t["name"] for t in body["status"]["trusts"]] == ["a", "b"]
    assert body["status"]["synced"] == "1/2"
    assert same_report(body, list(reversed(trusts)))
    assert not same_report(body, [TrustReport("a", "h1", SYNCED)])
    assert not same_report(None, [])


def test_report_names_the_trusts_that_need_attention_in_one_column_string() -> None:
    trusts = [
        TrustReport("c", "h3", CONFLICT, "another hosts.toml"),
        TrustReport("a", "h1", SYNCED),
        TrustReport("b", "", ERROR, "x"),
        TrustReport("d", "h4", REMOVED),
    ]
    status = report_body(
        node_name="n1", node_uid=None, namespace="ns", trusts=trusts, last_change="t1"
    )["status"]
    assert status["problems"] == "b: Error; c: Conflict"
    healthy = report_body(
        node_name="n1", node_uid=None, namespace="ns", trusts=trusts[1:2], last_change="t1"
    )["status"]
    assert "problems" not in healthy


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    delays = [backoff(n, 1.0, 8.0) for n in range(1, 7)]
    for n, d in enumerate(delays, start=1):
        nominal = min(2 ** (n - 1), 8.0)
        assert 0.8 * nominal <= d <= 1.2 * nominal


# ----------------------------------------------------------------- the agent on a host root


class NoApi:
    """The project's NodeApi, below the agent: the reconcile step reads only bundle
    Secrets (to write a trust again whose bytes it dropped), from the API server's
    Secrets as ``see`` last set them; any other call is a test failure."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.reads: list[str] = []

    def get_secret(self, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        return self.secrets.get(name)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call {name}")


def make_agent(root: Path) -> Agent:
    return Agent(Config(node_name="n1", host_root=root), NoApi())  # type: ignore[arg-type]


def see(
    a: Agent,
    secrets: list[dict[str, Any]],
    labels: Mapping[str, str] = LINUX,
    trusts: Mapping[str, str] | None = None,
) -> None:
    """What the watchers would have put into the view after a list. ``trusts`` (name ->
    uid) are the DTRTrusts that exist: by default those of ``secrets``."""
    a.view.bundles = {}
    for s in secrets:
        a._set_secret(s)
    if isinstance(a.api, NoApi):
        a.api.secrets = {s["metadata"]["name"]: s for s in secrets}
    a.view.labels = dict(labels)
    a.view.secrets_listed = True
    if trusts is None:
        trusts = {
            s["metadata"]["labels"]["dtrtrust.io/trust"]: s["metadata"]["ownerReferences"][0]["uid"]
            for s in secrets
        }
    a.view.trusts = dict(trusts)


DOCKER_DIR = "etc/docker/certs.d/dtr.example.com:4443"


def test_agent_writes_files_of_a_selected_trust_and_reports_synced(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA
    assert os.stat(tmp_path / DOCKER_DIR / "client.key").st_mode & 0o777 == 0o600
    assert a.reports["prod"] == TrustReport("prod", HASH, SYNCED)


def test_nothing_happens_before_the_first_complete_list(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    later = make_agent(tmp_path)  # restarted agent; the API has not answered yet
    later.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").exists()
    assert later.reports == {}


def test_trust_deleted_while_agent_was_down_is_cleaned_at_start(tmp_path: Path) -> None:
    first = make_agent(tmp_path)
    see(first, [secret()])
    first.reconcile(everything=True)
    restarted = make_agent(tmp_path)
    see(restarted, [])  # the Secret and the DTRTrust are gone
    restarted.reconcile(everything=True)
    assert not (tmp_path / DOCKER_DIR).exists()
    assert writer.owned_trusts(tmp_path) == set()
    assert restarted.reports["prod"].state == REMOVED


def test_retain_policy_survives_a_restart_and_keeps_files(tmp_path: Path) -> None:
    first = make_agent(tmp_path)
    see(first, [secret(policy="Retain")])
    first.reconcile(everything=True)
    restarted = make_agent(tmp_path)
    see(restarted, [])
    restarted.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA
    assert restarted.reports["prod"].state == RETAINED
    assert load_policies(tmp_path) == {"prod": "Retain"}


def test_node_no_longer_selected_loses_the_files(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret(selector={"role": "build"})], {**LINUX, "role": "build"})
    a.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR).is_dir()
    see(a, [secret(selector={"role": "build"})], LINUX)
    a.reconcile(everything=True)
    assert not (tmp_path / DOCKER_DIR).exists()
    assert a.reports["prod"].state == REMOVED


def test_changed_bundle_is_rewritten_and_unchanged_one_is_not_touched(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    before = os.stat(tmp_path / DOCKER_DIR / "ca.crt").st_mtime_ns
    a.reconcile(everything=True)
    assert os.stat(tmp_path / DOCKER_DIR / "ca.crt").st_mtime_ns == before
    see(a, [secret(data={"ca.crt": CA2})])
    a._mark(["prod"])
    a.reconcile(everything=False)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA2
    assert not (tmp_path / DOCKER_DIR / "client.key").exists()
    assert a.reports["prod"].content_hash == content_hash({"ca.crt": CA2})


def test_hand_deleted_file_is_restored_at_resync(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    (tmp_path / DOCKER_DIR / "ca.crt").unlink()
    a.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA


def test_unusable_secret_keeps_the_files_already_written(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    see(a, [secret(policy="Sometimes")])
    a.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA
    assert a.reports["prod"].state == ERROR
    assert "Delete or Retain" in a.reports["prod"].message


V2_OK = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""
V2_MIRRORS = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://registry-1.docker.io"]
"""


def test_not_effective_reported_from_the_hosts_containerd_config(tmp_path: Path) -> None:
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text(V2_MIRRORS)
    a = make_agent(tmp_path)
    see(a, [secret(targets="docker,containerd")])
    a.reconcile(everything=True)
    assert a.reports["prod"].state == NOT_EFFECTIVE
    assert (tmp_path / "etc/containerd/certs.d/dtr.example.com:4443/hosts.toml").is_file()
    (tmp_path / "etc/containerd/config.toml").write_text(V2_OK)
    a.reconcile(everything=True)
    assert a.reports["prod"].state == SYNCED


def test_removed_entry_leaves_the_report_after_its_grace(tmp_path: Path) -> None:
    now = [1000.0]
    a = Agent(Config(node_name="n1", host_root=tmp_path), NoApi(), clock=lambda: now[0])  # type: ignore[arg-type]
    see(a, [secret()])
    a.reconcile(everything=True)
    see(a, [])
    a.reconcile(everything=True)
    assert a.reports["prod"].state == REMOVED
    now[0] += REMOVED_TTL_SECONDS + 1
    a.reconcile(everything=True)
    assert "prod" not in a.reports


def test_a_deleted_node_is_unknown_and_no_files_are_touched(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret(), secret("kept", registries="kept.example.com", policy="Retain")])
    a.reconcile(everything=True)
    a._set_node(None)  # the watch saw the Node deleted (or it was never there)
    a.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA
    assert (tmp_path / "etc/docker/certs.d/kept.example.com/ca.crt").is_file()
    assert a.reports["prod"].state == SYNCED


def test_retain_keeps_the_files_when_the_node_is_no_longer_selected(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    labels = {**LINUX, "role": "build"}
    see(a, [secret(selector={"role": "build"}, policy="Retain")], labels)
    a.reconcile(everything=True)
    see(a, [secret(selector={"role": "build"}, policy="Retain")], LINUX)
    a.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA
    assert a.reports["prod"].state == RETAINED


def test_loopback_registry_is_not_effective_for_docker_on_the_node(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret(registries="127.0.0.1:4443")])
    a.reconcile(everything=True)
    assert a.reports["prod"].state == NOT_EFFECTIVE
    assert "insecure registry" in a.reports["prod"].message
    assert (tmp_path / "etc/docker/certs.d/127.0.0.1:4443/ca.crt").is_file()


def test_a_changed_runtime_config_is_noticed_without_waiting_for_the_resync(
    tmp_path: Path,
) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    assert not a.runtime_configs_changed()
    (tmp_path / "etc/docker/daemon.json").write_text('{"insecure-registries": ["x:1"]}')
    assert a.runtime_configs_changed()


# --------------------------------------------------------------------- the startup taint


@pytest.mark.parametrize(
    ("reports", "blocked"),
    [
        ({"prod": TrustReport("prod", HASH, SYNCED)}, []),
        ({}, ["prod: not synced yet"]),
        ({"prod": TrustReport("prod", "sha256:old", SYNCED)}, ["prod: not synced yet"]),
        ({"prod": TrustReport("prod", HASH, NOT_EFFECTIVE, "x")}, ["prod: NotEffective"]),
        ({"prod": TrustReport("prod", HASH, ERROR, "x")}, ["prod: Error"]),
    ],
)
def test_startup_taint_stays_until_every_selecting_trust_is_synced_and_effective(
    reports: dict[str, TrustReport], blocked: list[str]
) -> None:
    bundles: dict[str, Bundle | BundleError] = {
        "prod": _bundle(),
        "elsewhere": _bundle("elsewhere", selector={"role": "gpu"}),  # does not select
    }
    assert taint_blockers(bundles, LINUX, reports) == blocked


def test_an_unusable_bundle_secret_keeps_the_startup_taint() -> None:
    assert taint_blockers({"bad": BundleError("broken")}, LINUX, {}) == [
        "bad: its bundle Secret is unusable"
    ]


def test_a_failed_probe_keeps_the_startup_taint() -> None:
    reports = {"prod": TrustReport("prod", HASH, SYNCED)}
    assert taint_blockers({"prod": _bundle()}, LINUX, reports, verified={"prod": False})
    assert not taint_blockers({"prod": _bundle()}, LINUX, reports, verified={"prod": True})


class TaintApi:
    """The project's own NodeApi, below the agent: records remove_taint calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, Any]], str]] = []

    def remove_taint(self, taints: list[dict[str, Any]], key: str) -> None:
        self.calls.append((taints, key))


def test_agent_removes_its_startup_taint_only_after_the_files_are_in_place(
    tmp_path: Path,
) -> None:
    api = TaintApi()
    a = Agent(Config(node_name="n1", host_root=tmp_path), api)  # type: ignore[arg-type]
    see(a, [secret()])
    taints = [{"key": "dtrtrust.io/not-ready", "effect": "NoSchedule"}, {"key": "other"}]
    a.view.taints = list(taints)
    assert not a.untaint()  # nothing synced yet
    assert api.calls == []
    a.reconcile(everything=True)
    assert a.untaint()
    assert api.calls == [(taints, "dtrtrust.io/not-ready")]
    assert a.view.taints == [{"key": "other"}]
    assert not a.untaint()  # gone: no second patch
    assert len(api.calls) == 1


# ----------------------------------------------------------------------- the node probe


def test_agent_probes_with_the_files_it_wrote_once_per_content_and_interval(
    tmp_path: Path,
) -> None:
    from certfactory import make_ca, make_leaf
    from tlsserver import TLSServer, basic_info_route, valid_now

    root = make_ca("agent probe root")
    leaf = make_leaf("localhost", root, sans=["localhost"], ip_sans=["127.0.0.1"], **valid_now())
    client = make_leaf("agent probe client", root, sans=[], eku=["clientAuth"], **valid_now())
    routes = {"/basic_info": basic_info_route()}
    with TLSServer(
        chain_pem=leaf.chain_pem, key_pem=leaf.key_pem, routes=routes, client_ca_pem=root.cert_pem
    ) as server:
        now = [1000.0]
        a = Agent(Config(node_name="n1", host_root=tmp_path), NoApi(), clock=lambda: now[0])  # type: ignore[arg-type]
        files = {
            "ca.crt": root.cert_pem,
            "client.cert": client.chain_pem,
            "client.key": client.key_pem,
        }

        def seen(ca: bytes) -> None:
            data = {**files, "ca.crt": ca}
            see(a, [secret(registries=server.address, targets="containers", data=data,
                           probe="600")])  # fmt: skip

        seen(root.cert_pem)
        a.reconcile(everything=True)
        found = a.reports["prod"].probe
        assert found is not None
        assert (found["reachable"], found["tlsVerified"], found["clientCertificate"]) == (
            True, True, "Accepted",
        )  # fmt: skip
        assert "reason" not in found
        assert found["checkedAt"]
        assert a.verified() == {"prod": True}
        probes = len(server.requests)
        a.reconcile(everything=True)  # nothing changed: no new probe
        assert len(server.requests) == probes
        seen(root.cert_pem + make_ca("agent probe other").cert_pem)  # new content: probed again
        a.reconcile(everything=True)
        assert len(server.requests) > probes
        probes = len(server.requests)
        now[0] += 600 * 1.2 + 1  # past the interval, jitter included
        a.reconcile(everything=True)
        assert len(server.requests) > probes


def test_agent_reports_an_unreachable_registry_as_such(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from certfactory import make_ca

    ca = make_ca("agent unreachable root").cert_pem
    a = make_agent(tmp_path)
    address = f"127.0.0.1:{port}"
    see(a, [secret(registries=address, targets="containers", probe="600", data={"ca.crt": ca})])
    a.reconcile(everything=True)
    found = a.reports["prod"].probe
    assert found is not None
    assert found["reason"] == "Unreachable"
    assert found["reachable"] is False
    assert a.reports["prod"].state == SYNCED  # written and effective; the probe is separate
    assert a.verified() == {"prod": False}


def test_a_hand_edited_secret_is_refused_and_the_last_good_files_stay(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    before = os.stat(tmp_path / DOCKER_DIR / "ca.crt")
    tampered = secret()
    tampered["data"]["ca.crt"] = base64.b64encode(b"garbage, not a certificate").decode()
    see(a, [tampered])
    a.reconcile(everything=True)
    after = os.stat(tmp_path / DOCKER_DIR / "ca.crt")
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert a.reports["prod"].state == ERROR
    assert "does not match its dtrtrust.io/content-hash" in a.reports["prod"].message


def test_pem_text_check_accepts_real_certificates_and_crlf() -> None:
    from certfactory import make_ca
    from dtrtrust.core.pem_text import certificate_text_problem

    real = make_ca("pem text root").cert_pem + make_ca("pem text other").cert_pem
    assert certificate_text_problem(real) is None
    assert certificate_text_problem(b"\n" + real.replace(b"\n", b"\r\n") + b"\n\n") is None
    assert certificate_text_problem(b"") == "it holds no PEM CERTIFICATE block"


def test_a_deleted_secret_of_an_existing_trust_keeps_the_files_and_is_reported(
    tmp_path: Path,
) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    see(a, [], trusts={"prod": "uid-1"})  # the Secret is gone, its DTRTrust is not
    a.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA
    assert a.reports["prod"].state == ERROR
    assert "missing while DTRTrust prod exists" in a.reports["prod"].message
    # The operator publishes it again: synced, nothing rewritten.
    see(a, [secret()])
    a.reconcile(everything=True)
    assert a.reports["prod"] == TrustReport("prod", HASH, SYNCED)


def test_a_trust_created_again_under_the_same_name_loses_the_old_files(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    see(a, [], trusts={"prod": "uid-2"})  # deleted and created again; no Secret yet
    a.reconcile(everything=True)
    assert not (tmp_path / DOCKER_DIR).exists()
    assert a.reports["prod"].state == REMOVED


def test_remembered_policies_are_never_written_through_a_planted_link(tmp_path: Path) -> None:
    from dtrtrust.agent.policies import save_policies

    root, outside = tmp_path / "host", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / writer.STATE_DIR).parent.mkdir(parents=True)
    os.symlink(outside, root / writer.STATE_DIR)
    with pytest.raises(writer.WriterError, match="symbolic link"):
        save_policies(root, {"prod": "Retain"})
    assert list(outside.iterdir()) == []
    assert load_policies(root) == {}


def test_a_synced_bundle_is_kept_without_its_bytes_and_read_again_to_repair_drift(
    tmp_path: Path,
) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    kept = a.view.bundles["prod"]
    assert isinstance(kept, Bundle)
    assert kept.is_slim
    assert kept.ca == b""
    assert kept.client is None
    assert a.api.reads == []  # type: ignore[attr-defined]
    a.reconcile(everything=True)  # unchanged: no read
    assert a.api.reads == []  # type: ignore[attr-defined]
    (tmp_path / DOCKER_DIR / "client.key").unlink()
    a.reconcile(everything=True)
    assert a.api.reads == ["dtrtrust-prod"]  # type: ignore[attr-defined]
    assert (tmp_path / DOCKER_DIR / "client.key").read_bytes() == KEY
    assert a.reports["prod"].state == SYNCED


def test_a_bundle_that_cannot_be_read_again_keeps_the_files_and_says_why(
    tmp_path: Path,
) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    (tmp_path / DOCKER_DIR / "ca.crt").write_bytes(b"tampered")
    a.api.secrets = {}  # type: ignore[attr-defined]
    a.reconcile(everything=True)
    report = a.reports["prod"]
    assert report.state == ERROR
    assert "cannot read the bundle again" in report.message
    assert (tmp_path / DOCKER_DIR / "client.key").read_bytes() == KEY  # nothing removed


def test_a_slim_bundle_read_again_as_a_newer_secret_is_decided_again_for_it(
    tmp_path: Path,
) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    (tmp_path / DOCKER_DIR / "ca.crt").unlink()
    newer = secret(data={"ca.crt": CA2})  # the API server already has a new bundle
    a.api.secrets = {newer["metadata"]["name"]: newer}  # type: ignore[attr-defined]
    a.reconcile(everything=True)
    assert a.view.dirty == {"prod"}, "queued again, with the newer bundle in the view"
    a.reconcile(everything=False)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA2
    assert a.reports["prod"].state == SYNCED
