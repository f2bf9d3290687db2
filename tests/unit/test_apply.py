"""``dtrtrust apply`` in-process: manifests in, files and status out, state across runs.

The real network and the real command line are exercised in tests/e2e; here the
project's own Network protocol is stubbed so the front end's own decisions are tested.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

import certfactory
from dtrtrust.cli import apply
from dtrtrust.core.network import FetchError
from dtrtrust.node.probe import ProbeResult
from stubnet import StubNetwork

NOW = certfactory.NOW
OLD = certfactory.make_ca("Apply Root 2029")
NEW = certfactory.make_ca("Apply Root 2030")
INTER = certfactory.make_ca("Apply Issuing", parent=OLD, path_length=0)
CLIENT = certfactory.make_leaf("apply node", INTER, eku=["clientAuth"])
ADDR = "dtr.example.com:4443"
CONTAINERD_OK = """version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""


def write_manifests(tmp_path: Path, **spec: Any) -> Path:
    base: dict[str, Any] = {
        "registry": ADDR,
        "ca": {"fetch": {"pinnedSHA256": [OLD.fingerprint, NEW.fingerprint]}},
        "clientCertificate": {"secretRef": {"name": "client"}},
        "targets": ["docker", "containerd"],
    }
    base.update(spec)
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "client"},
            "data": {
                "tls.crt": base64.b64encode(CLIENT.cert_pem).decode(),
                "tls.key": base64.b64encode(CLIENT.key_pem).decode(),
            },
        },
        {
            "apiVersion": "dtrtrust.io/v1alpha1",
            "kind": "DTRTrust",
            "metadata": {"name": "dtr"},
            "spec": base,
        },
    ]
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.fixture
def host(tmp_path: Path) -> apply.HostOptions:
    root = tmp_path / "host"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONTAINERD_OK)
    return apply.HostOptions(host_root=root, home="/root", prober=passing_probe)


def passing_probe(address: str, directory: Path, with_client: bool) -> ProbeResult:
    """The project's own probe, stubbed below apply (no network in unit tests); it still
    insists on being pointed at the files apply wrote."""
    assert (directory / "ca.crt").is_file()
    assert (directory / "client.key").is_file() is with_client
    return ProbeResult(True, True, "Accepted" if with_client else "NotConfigured")


def run(
    manifest: Path, opts: apply.HostOptions, net: StubNetwork, now: dt.datetime = NOW
) -> apply.TrustResult:
    results = apply.apply_all(apply.load_manifests([str(manifest)]), opts, now=now, network=net)
    assert len(results) == 1
    return results[0]


def conditions(result: apply.TrustResult) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result.status["conditions"]}


def test_apply_writes_the_files_and_reports_ready(tmp_path: Path, host: apply.HostOptions) -> None:
    result = run(write_manifests(tmp_path), host, StubNetwork(OLD))
    assert result.ready
    docker = host.host_root / "etc/docker/certs.d" / ADDR
    assert (docker / "client.key").read_bytes() == CLIENT.key_pem
    assert (host.host_root / "etc/containerd/certs.d" / ADDR / "hosts.toml").exists()
    assert result.status["nodes"] == {
        "desired": 1,
        "synced": 1,
        "summary": "1/1",
        "outOfSync": [],
        "verified": 1,
    }


def test_a_failure_after_a_good_run_keeps_the_files_and_the_transition_times(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    manifest = write_manifests(tmp_path)
    good = run(manifest, host, StubNetwork(OLD))
    ca = host.host_root / "etc/docker/certs.d" / ADDR / "ca.crt"
    before = (ca.read_bytes(), ca.stat().st_mtime_ns)

    failed = run(
        manifest,
        host,
        StubNetwork(OLD, fetch_error=FetchError("FetchFailed", "down")),
        now=NOW + dt.timedelta(hours=1),
    )

    assert not failed.ready
    assert conditions(failed)["CAAvailable"] == ("False", "FetchFailed")
    assert conditions(failed)["NodesSynced"] == ("Unknown", "KeptPrevious")
    assert (ca.read_bytes(), ca.stat().st_mtime_ns) == before
    good_ready = {c["type"]: c for c in good.status["conditions"]}["Ready"]
    kept = {c["type"]: c for c in failed.status["conditions"]}
    assert good_ready["lastTransitionTime"] == "2030-01-01T00:00:00Z"
    assert kept["Ready"]["lastTransitionTime"] == "2030-01-01T01:00:00Z"
    # ClientCertificateValid did not change status: its transition time stays.
    assert kept["ClientCertificateValid"]["lastTransitionTime"] == "2030-01-01T00:00:00Z"


def test_a_rotation_across_two_runs_keeps_the_previous_ca_on_disk(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    manifest = write_manifests(tmp_path)
    run(manifest, host, StubNetwork(OLD))
    rotated = run(manifest, host, StubNetwork(NEW), now=NOW + dt.timedelta(hours=1))
    ca = (host.host_root / "etc/docker/certs.d" / ADDR / "ca.crt").read_bytes()
    assert OLD.cert_pem.strip() in ca
    assert NEW.cert_pem.strip() in ca
    assert [p["sha256"] for p in rotated.status["bundle"]["previousCAs"]] == [OLD.fingerprint]


def test_an_unusable_host_root_is_a_node_error_not_ready(tmp_path: Path) -> None:
    opts = apply.HostOptions(host_root=tmp_path / "does-not-exist", home="/root")
    result = run(write_manifests(tmp_path), opts, StubNetwork(OLD))
    assert not result.ready
    assert conditions(result)["NodesSynced"] == ("False", "NodeErrors")


def test_an_invalid_spec_is_reported_without_touching_the_host(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    result = run(write_manifests(tmp_path, registry="Bad_Host"), host, StubNetwork(OLD))
    assert not result.ready
    assert conditions(result)["Ready"] == ("False", "InvalidSpec")
    assert not (host.host_root / "etc/docker").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: [", "is not valid YAML"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no DTRTrust"),
        ("- just\n- a list\n", "every document must be a Kubernetes object"),
    ],
)
def test_unusable_input_files_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(text)
    with pytest.raises(apply.InputError, match=message):
        apply.load_manifests([str(path)])


def test_a_server_certificate_in_ca_pem_is_not_a_ca_and_keeps_the_previous_files(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    assert run(write_manifests(tmp_path), host, StubNetwork(OLD)).ready
    ca_file = host.host_root / "etc/docker/certs.d" / ADDR / "ca.crt"
    before = ca_file.read_bytes()
    leaf_in_pem = write_manifests(
        tmp_path,
        ca={"fetch": {"pinnedSHA256": [OLD.fingerprint]}, "pem": CLIENT.cert_pem.decode()},
    )
    result = run(leaf_in_pem, host, StubNetwork(OLD))
    assert conditions(result)["BundleValid"] == ("False", "NotACA")
    assert conditions(result)["Ready"] == ("False", "NotACA")
    assert ca_file.read_bytes() == before


def test_a_second_apply_with_nothing_changed_does_not_rewrite_the_state_file(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    manifest = write_manifests(tmp_path)
    assert run(manifest, host, StubNetwork(OLD)).ready
    state = host.state_dir / "dtr.json"
    before = state.stat()
    assert run(manifest, host, StubNetwork(OLD), now=NOW + dt.timedelta(minutes=5)).ready
    after = state.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_host_root_that_does_not_exist_is_refused_and_nothing_is_created(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "does-not-exist"
    opts = apply.HostOptions(host_root=missing, home="/root", system_trust=True)
    result = run(write_manifests(tmp_path), opts, StubNetwork(OLD))
    assert conditions(result)["NodesSynced"] == ("False", "NodeErrors")
    assert result.host_problem
    assert not missing.exists()


# The real config file formats under the host root; the checks themselves are
# tested case by case in test_effective.py, here that apply acts on them.
DEBIAN_STOCK_CONTAINERD = 'disabled_plugins = ["cri"]\n#root = "/var/lib/containerd"\n'


@pytest.mark.parametrize(
    ("path", "text", "registry", "words"),
    [
        ("etc/containerd/config.toml", DEBIAN_STOCK_CONTAINERD, ADDR, "no config_path is set"),
        ("etc/docker/daemon.json", '{"insecure-registries": ["' + ADDR + '"]}', ADDR, "insecure"),
        ("etc/docker/daemon.json", "{}", "127.0.0.1:4443", "loopback"),
        (
            "etc/containers/registries.conf",
            f'[[registry]]\nprefix = "{ADDR}"\nblocked = true\n',
            ADDR,
            "blocks",
        ),
    ],
)
def test_apply_reports_not_effective_when_the_runtime_would_ignore_the_files(
    tmp_path: Path, host: apply.HostOptions, path: str, text: str, registry: str, words: str
) -> None:
    (host.host_root / path).parent.mkdir(parents=True, exist_ok=True)
    (host.host_root / path).write_text(text)
    manifest = write_manifests(
        tmp_path,
        registry=registry,
        targets=["docker", "containerd", "containers"],
        verify={"tls": False},
        ca={"pem": OLD.cert_pem.decode()},
    )
    result = run(manifest, host, StubNetwork(OLD))
    assert conditions(result)["NodesSynced"] == ("False", "NotEffective")
    assert not result.ready
    synced = next(c for c in result.status["conditions"] if c["type"] == "NodesSynced")
    assert words in synced["message"]
    assert (host.host_root / f"etc/docker/certs.d/{registry}/ca.crt").is_file()  # still written


def test_apply_insecure_registries_conf_entry_is_a_warning_not_a_failure(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    (host.host_root / "etc/containers").mkdir(parents=True)
    (host.host_root / "etc/containers/registries.conf").write_text(
        f'[[registry]]\nlocation = "{ADDR}"\ninsecure = true\n'
    )
    manifest = write_manifests(
        tmp_path, targets=["containers"], verify={"tls": False}, ca={"pem": OLD.cert_pem.decode()}
    )
    result = run(manifest, host, StubNetwork(OLD))
    assert conditions(result)["NodesSynced"] == ("True", "Synced")
    synced = next(c for c in result.status["conditions"] if c["type"] == "NodesSynced")
    assert "insecure" in synced["message"]


def test_apply_probe_failure_is_nodes_verified_false_and_not_ready(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    seen: list[tuple[str, Path, bool]] = []

    def unreachable(address: str, directory: Path, with_client: bool) -> ProbeResult:
        seen.append((address, directory, with_client))
        return ProbeResult(False, False, "NotTested", "Unreachable", "cannot connect")

    host.prober = unreachable
    result = run(write_manifests(tmp_path), host, StubNetwork(OLD))
    assert conditions(result)["NodesVerified"] == ("False", "Unreachable")
    assert conditions(result)["Ready"] == ("False", "Unreachable")
    assert seen == [(ADDR, host.host_root / f"etc/docker/certs.d/{ADDR}", True)]


def test_apply_with_verify_nodes_false_does_not_probe(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    def never(address: str, directory: Path, with_client: bool) -> ProbeResult:
        raise AssertionError("probed although spec.verify.nodes is false")

    host.prober = never
    manifest = write_manifests(tmp_path, verify={"nodes": False})
    result = run(manifest, host, StubNetwork(OLD))
    assert result.ready
    assert "NodesVerified" not in conditions(result)
