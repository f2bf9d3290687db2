"""``dtrtrust apply --dry-run`` (what would change, nothing written), ``-o yaml|json``,
and ``dtrtrust status`` (the recorded trusts as a table), in-process on a real directory
tree with the project's Network stubbed (the network is not what is tested here)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
import yaml
from test_apply import ADDR, CLIENT, CONTAINERD_OK, NEW, NOW, OLD, passing_probe, write_manifests

from dtrtrust import cli
from dtrtrust.cli import apply
from dtrtrust.core.network import FetchError
from dtrtrust.node import plan
from stubnet import StubNetwork

DOCKER = f"etc/docker/certs.d/{ADDR}"
CONTAINERD = f"etc/containerd/certs.d/{ADDR}"


@pytest.fixture
def host(tmp_path: Path) -> apply.HostOptions:
    root = tmp_path / "host"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONTAINERD_OK)
    return apply.HostOptions(host_root=root, home="/root", prober=passing_probe)


def _run(
    manifest: Path,
    opts: apply.HostOptions,
    net: StubNetwork,
    *,
    dry_run: bool = False,
    now: dt.datetime = NOW,
) -> apply.TrustResult:
    (result,) = apply.apply_all(
        apply.load_manifests([str(manifest)]), opts, now=now, network=net, dry_run=dry_run
    )
    return result


def _tree(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under root: content, mode, mtime (what "nothing written" compares)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(root))] = (path.read_bytes(), st.st_mode, st.st_mtime_ns)
    return out


def _actions(result: apply.TrustResult) -> dict[str, str]:
    assert result.changes is not None
    return {c.path: c.action for c in result.changes}


def test_dry_run_on_an_empty_host_lists_every_file_as_added_and_writes_nothing(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    before = _tree(host.host_root)

    result = _run(write_manifests(tmp_path), host, StubNetwork(OLD), dry_run=True)

    assert _actions(result) == {
        f"{DOCKER}/ca.crt": "add",
        f"{DOCKER}/client.cert": "add",
        f"{DOCKER}/client.key": "add",
        f"{CONTAINERD}/ca.crt": "add",
        f"{CONTAINERD}/client.cert": "add",
        f"{CONTAINERD}/client.key": "add",
        f"{CONTAINERD}/hosts.toml": "add",
    }
    assert _tree(host.host_root) == before  # nothing written, not even apply's state


def test_dry_run_after_a_rotation_replaces_only_the_ca_and_leaves_files_and_state_alone(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    manifest = write_manifests(tmp_path)
    assert _run(manifest, host, StubNetwork(OLD)).ready
    before = _tree(host.host_root)

    result = _run(manifest, host, StubNetwork(NEW), dry_run=True, now=NOW + dt.timedelta(hours=1))

    actions = _actions(result)
    assert {p for p, a in actions.items() if a == "replace"} == {
        f"{DOCKER}/ca.crt",
        f"{CONTAINERD}/ca.crt",
    }
    assert {a for p, a in actions.items() if not p.endswith("ca.crt")} == {"unchanged"}
    assert _tree(host.host_root) == before


def test_dry_run_names_files_that_would_be_removed_and_a_mode_that_would_be_fixed(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    assert _run(write_manifests(tmp_path), host, StubNetwork(OLD)).ready
    os.chmod(host.host_root / DOCKER / "client.key", 0o644)

    result = _run(
        write_manifests(tmp_path, targets=["docker"]), host, StubNetwork(OLD), dry_run=True
    )

    assert result.changes is not None
    by_path = {c.path: c for c in result.changes}
    assert by_path[f"{DOCKER}/client.key"] == plan.Change(
        "replace", f"{DOCKER}/client.key", "mode 0644 -> 0600"
    )
    assert {p for p, c in by_path.items() if c.action == "remove"} == {
        f"{CONTAINERD}/{name}" for name in ("ca.crt", "client.cert", "client.key", "hosts.toml")
    }


def test_dry_run_reports_another_tools_hosts_toml_as_a_conflict(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    theirs = host.host_root / CONTAINERD / "hosts.toml"
    theirs.parent.mkdir(parents=True)
    theirs.write_text('server = "https://elsewhere"\n')

    result = _run(write_manifests(tmp_path), host, StubNetwork(OLD), dry_run=True)

    assert _actions(result)[f"{CONTAINERD}/hosts.toml"] == "conflict"


def test_dry_run_never_follows_a_symlink_in_the_path(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ca.crt").write_bytes(OLD.cert_pem)
    (host.host_root / "etc/docker/certs.d").mkdir(parents=True)
    (host.host_root / DOCKER).symlink_to(outside)

    result = _run(write_manifests(tmp_path), host, StubNetwork(OLD), dry_run=True)

    assert _actions(result)[f"{DOCKER}/ca.crt"] == "refused"


def test_dry_run_of_a_failing_trust_would_write_nothing(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    result = _run(
        write_manifests(tmp_path),
        host,
        StubNetwork(OLD, fetch_error=FetchError("FetchFailed", "down")),
        dry_run=True,
    )

    assert result.changes is None
    assert "nothing would be written (FetchFailed:" in apply.render_plan([result])


def test_dry_run_text_lists_adds_replacements_and_removals(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    assert _run(write_manifests(tmp_path), host, StubNetwork(OLD)).ready
    result = _run(
        write_manifests(tmp_path, targets=["docker"]),
        host,
        StubNetwork(NEW),
        dry_run=True,
        now=NOW + dt.timedelta(hours=1),
    )

    text = apply.render_plan([result])

    assert text.splitlines()[0] == "dtr: would change under the host root"
    assert f"  replace         {DOCKER}/ca.crt  (content differs)" in text
    assert f"  remove          {CONTAINERD}/hosts.toml" in text
    assert "(2 file(s) already as they should be)" in text


def test_output_json_is_one_list_and_yaml_the_status_documents(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    result = _run(write_manifests(tmp_path), host, StubNetwork(OLD))

    as_json = json.loads(apply.render([result], "json"))
    as_yaml = list(yaml.safe_load_all(apply.render([result], "yaml")))

    assert as_json["kind"] == "List"
    assert as_json["items"] == as_yaml
    assert as_yaml[0]["metadata"] == {"name": "dtr"}
    assert "dryRun" not in as_yaml[0]


def test_status_table_shows_registry_ready_files_and_earliest_expiry(
    tmp_path: Path, host: apply.HostOptions, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _run(write_manifests(tmp_path), host, StubNetwork(OLD))
    _run(
        write_manifests(tmp_path, ca={"fetch": {"pinnedSHA256": ["sha256:" + "0" * 64]}}),
        host,
        StubNetwork(OLD),
    )  # a later failing run keeps the files; status says so

    code = cli.main(["status", "--host-root", str(host.host_root)])

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "REGISTRY", "READY", "REASON", "FILES", "EXPIRES"]
    assert lines[1].split() == [
        "dtr",
        ADDR,
        "False",
        "FingerprintMismatch",
        "7",
        result.status["bundle"]["notAfter"],
    ]
    assert code == 1


def test_status_as_json_and_on_a_host_without_state(
    tmp_path: Path, host: apply.HostOptions, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--host-root", str(host.host_root)]) == 0
    assert "no trust has been applied on this host" in capsys.readouterr().out

    _run(write_manifests(tmp_path), host, StubNetwork(OLD))
    assert cli.main(["status", "--host-root", str(host.host_root), "-o", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["name"], row["ready"], row["files"]) == ("dtr", "True", "7")
    assert CLIENT.key_pem.decode() not in json.dumps(row)


def test_rotation_overlap_across_timer_runs_keeps_the_old_ca_then_drops_it_as_in_the_cluster(
    tmp_path: Path, host: apply.HostOptions
) -> None:
    # What the systemd timer does: the same apply, hours and days apart, while the
    # registry switches from OLD to NEW (rotationOverlap defaults to 7 days).
    manifest = write_manifests(tmp_path)
    ca = host.host_root / DOCKER / "ca.crt"
    assert _run(manifest, host, StubNetwork(OLD)).ready

    hour = _run(manifest, host, StubNetwork(NEW), now=NOW + dt.timedelta(hours=1))
    in_overlap = ca.read_bytes()
    day6 = _run(manifest, host, StubNetwork(NEW), now=NOW + dt.timedelta(days=6))
    day8 = _run(manifest, host, StubNetwork(NEW), now=NOW + dt.timedelta(days=8))

    assert hour.ready
    assert day6.ready
    assert day8.ready
    assert OLD.cert_pem.strip() in in_overlap
    assert NEW.cert_pem.strip() in in_overlap
    assert [p["sha256"] for p in day6.status["bundle"]["previousCAs"]] == [OLD.fingerprint]
    assert OLD.cert_pem.strip() not in ca.read_bytes()
    assert NEW.cert_pem.strip() in ca.read_bytes()
    assert not day8.status["bundle"].get("previousCAs")
