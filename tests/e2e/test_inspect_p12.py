"""`dtrtrust inspect` diagnoses the DTR-like registry; `dtrtrust p12` output opens with openssl.

Run as a user would, against the real stack and with the real openssl; every call also checks
that no traceback reaches the user.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import (
    cert_public_key_der,
    fingerprint,
    public_key_der,
    run_dtrtrust,
    sha256_fingerprints,
)

from dtrstack import Stack, Tool

pytestmark = pytest.mark.registry

PIN_LINE = re.compile(r'^\s*pinnedSHA256: \["(sha256:[0-9a-f]{64})"\]\s*$', re.MULTILINE)


def _check(output: str, name: str) -> str:
    """The one line of the Checks section about ``name`` (e.g. "host name", "chain")."""
    lines = [ln for ln in output.splitlines() if re.match(rf"\s*\S+\s+{re.escape(name)}:", ln)]
    assert len(lines) == 1, output
    return lines[0].strip()


def test_inspect_full_chain_port_reports_chain_fingerprints_host_name_and_the_pin_to_paste(
    dtr_stack: Stack,
) -> None:
    result = run_dtrtrust("inspect", dtr_stack.address)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for pem in (dtr_stack.root_ca, dtr_stack.intermediate_ca, dtr_stack.server_cert):
        assert fingerprint(pem) in out
    assert "CN=dtrtrust test intermediate CA" in out
    assert _check(out, "host name").startswith("ok")
    assert "127.0.0.1" in _check(out, "host name")
    assert _check(out, "chain").startswith("ok")
    pins = PIN_LINE.findall(out)
    assert pins == [dtr_stack.root_sha256]


@pytest.mark.parametrize(("pair", "authn_ok"), [(None, False), ("client", True), ("rogue", False)])
def test_inspect_reports_tls_client_certificate_authn_only_with_the_trusted_client_pair(
    dtr_stack: Stack, pair: str | None, authn_ok: bool
) -> None:
    pairs = {
        "client": (dtr_stack.client_cert, dtr_stack.client_key),
        "rogue": (dtr_stack.rogue_cert, dtr_stack.rogue_key),
    }
    args: list[str | Path] = []
    if pair is not None:
        cert, key = pairs[pair]
        args = ["--client-cert", cert, "--client-key", key]

    result = run_dtrtrust("inspect", dtr_stack.address, *args)

    out = result.stdout
    anonymous = _check(out, "/basic_info without a client certificate")
    assert "401" in anonymous
    assert ("AuthnMethod TLSClientCertificate" in out) is authn_ok
    if pair is None:
        assert "--client-cert" in out  # says how to test client certificate auth
        assert result.returncode == 0, out + result.stderr
    else:
        line = _check(out, "/basic_info with the client certificate")
        assert line.startswith("ok" if authn_ok else "FAIL"), line
        assert result.returncode == (0 if authn_ok else 1), out + result.stderr
    key_lines = [ln for ln in pairs["client"][1].read_text().splitlines() if "-----" not in ln]
    assert not any(ln in out + result.stderr for ln in key_lines)


def test_inspect_leaf_only_port_says_the_intermediate_is_missing_and_exits_1(
    dtr_stack: Stack,
) -> None:
    result = run_dtrtrust("inspect", dtr_stack.leaf_only_address)

    assert result.returncode == 1, result.stdout + result.stderr
    chain = _check(result.stdout, "chain")
    assert chain.startswith("FAIL")
    assert "intermediate is missing" in chain
    assert "CN=dtrtrust test intermediate CA" in chain
    assert fingerprint(dtr_stack.intermediate_ca) not in result.stdout  # it was not sent
    assert PIN_LINE.findall(result.stdout) == [dtr_stack.root_sha256]


# --------------------------------------------------------------------------- p12

PASSWORD = "correct horse battery staple"


def _p12(stack: Stack, tmp_path: Path, *extra: str) -> tuple[Path, Path, str]:
    """Run `dtrtrust p12` with a password file; return (OUT, password file, stdout+stderr)."""
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    out = tmp_path / "node.p12"
    result = run_dtrtrust(
        "p12",
        *("--cert", stack.client_cert, "--key", stack.client_key, "--ca", stack.client_ca),
        *("-o", out, "--password-file", password_file),
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return out, password_file, result.stdout + result.stderr


def test_p12_opens_with_openssl_and_holds_the_same_certificate_and_a_matching_key(
    dtr_stack: Stack, openssl: Tool, tmp_path: Path
) -> None:
    out, password_file, output = _p12(dtr_stack, tmp_path)
    passin = f"file:{password_file}"

    certs = openssl.run("pkcs12", "-in", out, "-passin", passin, "-nokeys")
    key = openssl.run("pkcs12", "-in", out, "-passin", passin, "-nocerts", "-nodes")

    assert certs.returncode == 0, certs.stderr
    assert key.returncode == 0, key.stderr
    assert sha256_fingerprints(certs.stdout.encode()) == {
        fingerprint(dtr_stack.client_cert),
        fingerprint(dtr_stack.client_ca),
    }
    key_pem = key.stdout[key.stdout.index("-----BEGIN") :].encode()
    assert public_key_der(key_pem) == cert_public_key_der(dtr_stack.client_cert.read_bytes())
    assert out.stat().st_mode & 0o7777 == 0o600
    assert PASSWORD not in output


@pytest.mark.parametrize(
    ("extra", "pbe", "mac"),
    [
        ((), "PBES2, PBKDF2, AES-256-CBC", "MAC: sha256"),
        (("--legacy",), "pbeWithSHA1And3-KeyTripleDES-CBC", "MAC: sha1"),
    ],
)
def test_p12_legacy_is_3des_with_a_sha1_mac_and_the_default_is_aes_with_sha256(
    dtr_stack: Stack, openssl: Tool, tmp_path: Path, extra: tuple[str, ...], pbe: str, mac: str
) -> None:
    out, password_file, _ = _p12(dtr_stack, tmp_path, *extra)

    # -legacy loads openssl 3's legacy provider, which reading 3DES needs.
    info = openssl.run(
        "pkcs12", "-info", "-noout", "-legacy", "-in", out, "-passin", f"file:{password_file}"
    )

    assert info.returncode == 0, info.stderr
    details = info.stdout + info.stderr
    assert mac in details
    assert pbe in details
    assert ("pbeWithSHA1And3-KeyTripleDES-CBC" in details) == bool(extra)


def test_p12_is_protected_by_the_password_from_the_file(
    dtr_stack: Stack, openssl: Tool, tmp_path: Path
) -> None:
    out, _, _ = _p12(dtr_stack, tmp_path)

    wrong = openssl.run("pkcs12", "-in", out, "-passin", "pass:not the password", "-nokeys")

    assert wrong.returncode != 0
    assert "BEGIN CERTIFICATE" not in wrong.stdout


def test_p12_help_offers_no_option_that_takes_the_password_itself() -> None:
    # A password in argv is readable by every user through /proc/<pid>/cmdline.
    help_text = run_dtrtrust("p12", "--help").stdout

    assert "--password-file" in help_text
    assert not re.search(r"--password(?!-file)|--pass\b|--passin|--passout", help_text)


def test_p12_refuses_a_password_on_the_command_line_without_echoing_it(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    refused = run_dtrtrust(
        "p12",
        *("--cert", dtr_stack.client_cert, "--key", dtr_stack.client_key),
        *("-o", tmp_path / "x.p12", "--password", PASSWORD),
    )

    assert refused.returncode == 2
    assert not (tmp_path / "x.p12").exists()
    assert PASSWORD not in refused.stdout + refused.stderr
