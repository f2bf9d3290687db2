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
)
from dtrtrust.agent.loop import REMOVED_TTL_SECONDS, Agent, backoff
from dtrtrust.agent.policies import load_policies
from dtrtrust.agent.report import TrustReport, report_body, same_report
from dtrtrust.contract import CONFLICT, ERROR, NOT_EFFECTIVE, REMOVED, RETAINED, SYNCED
from dtrtrust.core.labels import selects
from dtrtrust.node import writer
from dtrtrust.node.containerd import containerd_problem
from dtrtrust.operator.objects import bundle_secret

CA = b"-----BEGIN CERTIFICATE-----\nCA one\n-----END CERTIFICATE-----\n"
CA2 = b"-----BEGIN CERTIFICATE-----\nCA two\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"
LINUX = {"kubernetes.io/os": "linux"}


def secret(
    trust: str = "prod",
    *,
    hash_: str = "sha256:aaa",
    registries: str = "dtr.example.com:4443",
    targets: str = "docker",
    selector: Mapping[str, str] | None = None,
    policy: str = "Delete",
    data: Mapping[str, bytes] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    files = {"ca.crt": CA, "client.cert": CERT, "client.key": KEY} if data is None else data
    return {
        "metadata": {
            "name": f"dtrtrust-{trust}",
            "labels": dict(labels) if labels is not None else {"dtrtrust.io/trust": trust},
            "annotations": {
                "dtrtrust.io/content-hash": hash_,
                "dtrtrust.io/registries": registries,
                "dtrtrust.io/targets": targets,
                "dtrtrust.io/node-selector": json.dumps(dict(selector or {})),
                "dtrtrust.io/deletion-policy": policy,
            },
        },
        "data": {k: base64.b64encode(v).decode() for k, v in files.items()},
    }


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
    body = bundle_secret(spec, "uid-1", {"ca.crt": CA}, "sha256:abc", "dtrtrust-system")
    bundle = parse_bundle(body)
    assert bundle == Bundle(
        trust="prod",
        content_hash="sha256:abc",
        addresses=("dtr.example.com:4443", "10.0.0.5:4443"),
        targets=("docker", "containerd"),
        selector={"role": "build"},
        policy="Retain",
        ca=CA,
        client=None,
    )


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
        # deselection removes even with Retain: Retain is about deleting the trust
        (
            {"prod": _bundle(selector={"role": "x"}, policy="Retain")},
            LINUX,
            {"prod"},
            {"prod": "Retain"},
            [("prod", "remove")],
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
    got = [(a.trust, a.kind) for a in decide(bundles, labels, owned, policies)]
    assert got == expected


def test_decide_limited_to_dirty_trusts_leaves_others_alone() -> None:
    bundles = {"a": _bundle("a"), "b": _bundle("b")}
    got = decide(bundles, LINUX, {"gone"}, {}, trusts={"b"})
    assert [(a.trust, a.kind) for a in got] == [("b", "sync")]


# --------------------------------------------------------------------------- containerd

V2_OK = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""
V2_BOTH = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d/:/etc/docker/certs.d"
"""
V2_EMPTY = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = ""
"""
V2_MIRRORS = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://registry-1.docker.io"]
"""
V2_OTHER_DIR = """
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/docker/certs.d"
"""
V3_OK = """
version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"
"""
V3_OLD_TABLE = """
version = 3
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""
V1_OK = """
[plugins.cri.registry]
  config_path = "/etc/containerd/certs.d"
"""
WITH_IMPORTS = """
version = 2
imports = ["/etc/containerd/conf.d/*.toml"]
"""


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (None, None),  # no config.toml: maybe no containerd; nothing to judge
        (V2_OK, None),
        (V2_BOTH, None),
        (V3_OK, None),
        (V1_OK, None),
        (WITH_IMPORTS, None),  # config_path may be in an imported file
        ("", "[plugins.cri.registry]"),  # empty file: version 1 defaults, no config_path
        ("version = 2\n", '[plugins."io.containerd.grpc.v1.cri".registry]'),
        (V2_EMPTY, '[plugins."io.containerd.grpc.v1.cri".registry]'),
        (V2_MIRRORS, "no config_path is set"),
        (V2_OTHER_DIR, "config_path is '/etc/docker/certs.d'"),
        (V3_OLD_TABLE, '[plugins."io.containerd.cri.v1.images".registry]'),
        ("version = 2\n[plugins\n", "cannot be parsed"),
    ],
)
def test_containerd_config_decides_whether_certs_d_is_effective(
    config: str | None, problem: str | None
) -> None:
    got = containerd_problem(config)
    if problem is None:
        assert got is None
    else:
        assert got is not None
        assert problem in got
        assert "/etc/containerd/certs.d" in got


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
    report = sync_state(bundle, result, None)
    assert report.state == CONFLICT
    assert "etc/containerd/certs.d/dtr.example.com:4443" in report.message


@pytest.mark.parametrize(
    ("targets", "problem", "state"),
    [
        ("docker", None, SYNCED),
        ("docker", "containerd will not read", SYNCED),  # containerd not a target
        ("docker,containerd", None, SYNCED),
        ("docker,containerd", "containerd will not read", NOT_EFFECTIVE),
    ],
)
def test_not_effective_only_when_containerd_is_a_target(
    targets: str, problem: str | None, state: str
) -> None:
    report = sync_state(_bundle(targets=targets), writer.SyncResult(), problem)
    assert report.state == state


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


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    delays = [backoff(n, 1.0, 8.0) for n in range(1, 7)]
    for n, d in enumerate(delays, start=1):
        nominal = min(2 ** (n - 1), 8.0)
        assert 0.8 * nominal <= d <= 1.2 * nominal


# ----------------------------------------------------------------- the agent on a host root


class NoApi:
    """The reconcile step never calls the API; any call is a test failure."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call {name}")


def make_agent(root: Path) -> Agent:
    return Agent(Config(node_name="n1", host_root=root), NoApi())  # type: ignore[arg-type]


def see(a: Agent, secrets: list[dict[str, Any]], labels: Mapping[str, str] = LINUX) -> None:
    """What the watchers would have put into the view after a list."""
    a.view.bundles = {}
    for s in secrets:
        a._set_secret(s)
    a.view.labels = dict(labels)
    a.view.secrets_listed = True


DOCKER_DIR = "etc/docker/certs.d/dtr.example.com:4443"


def test_agent_writes_files_of_a_selected_trust_and_reports_synced(tmp_path: Path) -> None:
    a = make_agent(tmp_path)
    see(a, [secret()])
    a.reconcile(everything=True)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA
    assert os.stat(tmp_path / DOCKER_DIR / "client.key").st_mode & 0o777 == 0o600
    assert a.reports["prod"] == TrustReport("prod", "sha256:aaa", SYNCED)


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
    see(restarted, [])  # the Secret is gone
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
    see(a, [secret(hash_="sha256:bbb", data={"ca.crt": CA2})])
    a._mark(["prod"])
    a.reconcile(everything=False)
    assert (tmp_path / DOCKER_DIR / "ca.crt").read_bytes() == CA2
    assert not (tmp_path / DOCKER_DIR / "client.key").exists()
    assert a.reports["prod"].content_hash == "sha256:bbb"


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
