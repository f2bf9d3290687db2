"""Hostile manifest files: each is refused fast with one line, and exit code 2.

Alias bombs, oversized and binary files, absurd nesting and values of the wrong shape
must never reach the reconcile (where an expanded alias bomb costs minutes and
gigabytes) nor end in the catch-all "unexpected error".
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

import certfactory
from dtrtrust.cli import EXIT_UNEXPECTED, EXIT_USAGE, apply, main, manifest_yaml

CA = certfactory.make_ca("Input Root")

TRUST = """\
apiVersion: dtrtrust.io/v1alpha1
kind: DTRTrust
metadata: {name: dtr}
spec:
  registry: dtr.example.com
"""


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each anchor uses the previous one ``width`` times."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        uses = ", ".join(f"*a{i - 1}" for _ in range(width))
        lines.append(f"a{i}: &a{i} [{uses}]")
    return (
        "apiVersion: dtrtrust.io/v1alpha1\nkind: DTRTrust\nmetadata: {name: dtr}\n"
        "x-bomb:\n"
        + "".join(f"  {line}\n" for line in lines)
        + f"spec:\n  registry: dtr.example.com\n  deletionPolicy: *a{levels}\n"
    )


def write(tmp_path: Path, data: str | bytes) -> Path:
    path = tmp_path / "in.yaml"
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    with pytest.raises(apply.InputError, match="alias"):
        apply.load_manifests([str(write(tmp_path, alias_bomb()))])


def test_a_self_referencing_anchor_is_refused(tmp_path: Path) -> None:
    text = TRUST + "  aliases: &loop [*loop]\n"
    with pytest.raises(apply.InputError, match="alias"):
        apply.load_manifests([str(write(tmp_path, text))])


def test_ordinary_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = (
        "apiVersion: dtrtrust.io/v1alpha1\nkind: DTRTrust\nmetadata: {name: dtr}\n"
        "x-defaults: &defaults {registry: dtr.example.com, targets: [docker]}\n"
        "spec:\n  <<: *defaults\n  pem: &pem |\n"
        + "".join(f"    {line}\n" for line in CA.cert_pem.decode().splitlines())
    )
    found = apply.load_manifests([str(write(tmp_path, text))])
    assert found.trusts[0]["spec"]["registry"] == "dtr.example.com"
    assert found.trusts[0]["spec"]["targets"] == ["docker"]


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    text = TRUST + "# " + "x" * manifest_yaml.MAX_INPUT_BYTES + "\n"
    with pytest.raises(apply.InputError, match="larger than 8 MiB"):
        apply.load_manifests([str(write(tmp_path, text))])


def test_a_document_that_expands_past_the_input_limit_through_aliases_is_refused(
    tmp_path: Path,
) -> None:
    big = "y" * (1024 * 1024)
    uses = ", ".join(["*big"] * 20)
    text = TRUST + f"  pem: &big {big}\nx: [{uses}]\n"
    with pytest.raises(apply.InputError, match="alias"):
        apply.load_manifests([str(write(tmp_path, text))])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage \x80\x81", "is not text"),
        (b"kind: DTRTrust\x00\x01\x02", "not YAML text"),
        ("[" * 20000 + "]" * 20000, "nested too deeply"),
        (TRUST + "  x: " + "9" * 5000 + "\n", "a value cannot be read"),
        ("apiVersion: v1\nkind: Secret\nmetadata: [not, a, mapping]\n", "metadata must be"),
        ("apiVersion: v1\nkind: List\nitems: {a: b}\n", "items must be a list"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: [x]\n", "data must be"),
        ("kind: List\nitems: [42]\n", "every document must be a Kubernetes object"),
    ],
)
def test_hostile_files_are_one_line_input_errors(
    tmp_path: Path, data: str | bytes, message: str
) -> None:
    with pytest.raises(apply.InputError, match=message) as info:
        apply.load_manifests([str(write(tmp_path, data))])
    assert "\n" not in str(info.value)


def test_a_bad_generation_is_an_invalid_spec_not_a_crash(tmp_path: Path) -> None:
    text = TRUST.replace("metadata: {name: dtr}", "metadata: {name: dtr, generation: abc}")
    found = apply.load_manifests([str(write(tmp_path, text))])
    opts = apply.HostOptions(host_root=tmp_path, home="/root")
    from stubnet import StubNetwork

    result = apply.apply_all(found, opts, now=certfactory.NOW, network=StubNetwork(CA))[0]
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")


def test_the_command_line_exits_2_with_one_line_for_an_alias_bomb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["apply", "-f", str(write(tmp_path, alias_bomb())), "--host-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.count("\n") == 1
    assert err.startswith("dtrtrust: ")


def test_the_command_line_exits_2_for_binary_garbage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = bytes(range(256)) * 64
    code = main(["apply", "-f", str(write(tmp_path, garbage)), "--host-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "is not text" in err
    assert "unexpected" not in err


def test_delete_with_an_invalid_name_exits_2_and_removes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = TRUST.replace("name: dtr", "name: 'Bad Name/..'")
    code = main(
        ["apply", "--delete", "-f", str(write(tmp_path, text)), "--host-root", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "is not a valid object name" in err
    assert "unexpected" not in err


def test_an_unexpected_error_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kw: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(apply, "apply_all", broken)
    code = main(["apply", "-f", str(write(tmp_path, TRUST)), "--host-root", str(tmp_path)])
    assert code == EXIT_UNEXPECTED
    assert "unexpected error (RuntimeError)" in capsys.readouterr().err


def test_secret_data_is_still_read_from_base64(tmp_path: Path) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "roots"},
        "data": {"ca.crt": base64.b64encode(CA.cert_pem).decode()},
    }
    path = write(tmp_path, TRUST + "---\n" + yaml.safe_dump(secret))
    assert apply.load_manifests([str(path)]).sources.secrets["roots"]["ca.crt"] == CA.cert_pem
