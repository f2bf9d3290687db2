"""Unit tests of the pure certificate core (dtrtrust.core), with fixed-date fixture PKIs."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.serialization import pkcs12

from certfactory import (
    NOW,
    Issued,
    make_ca,
    make_key,
    make_leaf,
    make_pki,
    pem_join,
)
from dtrtrust.core.bundle import compose_bundle, describe, summaries_from_pem
from dtrtrust.core.client import validate_client_pair
from dtrtrust.core.errors import CertError
from dtrtrust.core.fingerprints import (
    content_hash,
    fingerprint_der,
    openssl_fingerprint,
    parse_fingerprint,
)
from dtrtrust.core.pem import parse_certificates
from dtrtrust.core.pkcs12 import LEGACY_KDF_ROUNDS, PKCS12_KDF_ROUNDS, to_pkcs12

UTC = dt.UTC
DAY = dt.timedelta(days=1)

PKI = make_pki()
ROOT, INTER, SERVER, CLIENT = PKI.root, PKI.intermediate, PKI.server, PKI.client
OTHER_ROOT = make_ca("Other Root CA")
EXPIRED_ROOT = make_ca(
    "Expired Root CA",
    not_before=dt.datetime(2020, 1, 1, tzinfo=UTC),
    not_after=dt.datetime(2029, 1, 1, tzinfo=UTC),
)
FUTURE_ROOT = make_ca(
    "Future Root CA",
    not_before=dt.datetime(2030, 6, 1, tzinfo=UTC),
    not_after=dt.datetime(2040, 1, 1, tzinfo=UTC),
)
SOON_ROOT = make_ca("Soon Expiring Root CA", not_after=NOW + 10 * DAY)
NO_BC_LEAF = make_leaf("no-basic-constraints", ROOT, basic_constraints=False)


def _b64_of_pem(pem: bytes) -> str:
    """The base64 body of a PEM block on one line, and its first 64-column line."""
    return "".join(pem.decode().strip().splitlines()[1:-1])


def _body_lines(pem: bytes) -> list[str]:
    return [line for line in pem.decode().splitlines() if len(line) >= 16 and "-----" not in line]


def _assert_one_line(err: CertError) -> None:
    assert "\n" not in str(err)
    assert str(err) == err.message
    assert "Traceback" not in str(err)


def _assert_no_key_material(err: CertError, key_pem: bytes) -> None:
    """No 16-character run of any base64 line of the key appears in the error."""
    for line in _body_lines(key_pem):
        for i in range(0, max(len(line) - 15, 1), 8):
            assert line[i : i + 16] not in str(err)
            assert line[i : i + 16] not in err.message


# --------------------------------------------------------------------------- strict PEM: accepted


def test_valid_certificates_parse_in_input_order() -> None:
    parsed = parse_certificates(pem_join(SERVER, INTER, ROOT), source="chain")
    assert [describe(c).sha256 for c in parsed] == [
        SERVER.fingerprint,
        INTER.fingerprint,
        ROOT.fingerprint,
    ]


@pytest.mark.parametrize(
    ("case", "data"),
    [
        ("CRLF line endings", pem_join(ROOT, INTER).replace(b"\n", b"\r\n")),
        ("old Mac CR line endings", pem_join(ROOT, INTER).replace(b"\n", b"\r")),
        (
            "blank lines around and between",
            b"\n\n  \n" + ROOT.cert_pem + b"\n\t\n" + INTER.cert_pem,
        ),
        (
            "indented lines (as pasted in YAML)",
            b"".join(b"    " + line + b"\n" for line in pem_join(ROOT, INTER).splitlines()),
        ),
        ("no trailing newline", pem_join(ROOT, INTER).rstrip(b"\n")),
        ("UTF-8 byte-order mark", b"\xef\xbb\xbf" + pem_join(ROOT, INTER)),
        (
            "one-line base64 body",
            b"".join(
                b"-----BEGIN CERTIFICATE-----\n"
                + _b64_of_pem(i.cert_pem).encode()
                + b"\n-----END CERTIFICATE-----\n"
                for i in (ROOT, INTER)
            ),
        ),
    ],
)
def test_whitespace_line_endings_and_bom_are_tolerated(case: str, data: bytes) -> None:
    parsed = parse_certificates(data, source="inline pem")
    assert [describe(c).sha256 for c in parsed] == [ROOT.fingerprint, INTER.fingerprint], case


@pytest.mark.parametrize("data", [b"", b"\n \r\n\t\n"])
def test_input_without_blocks_parses_to_no_certificates(data: bytes) -> None:
    assert parse_certificates(data, source="empty") == []


# --------------------------------------------------------------------------- strict PEM: rejected

_BODY = _b64_of_pem(ROOT.cert_pem)
_ROOT_LINES = ROOT.cert_pem.decode().splitlines()


def _block(label: str, body: str) -> bytes:
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


INVALID_PEM_CASES = [
    # (case, data, fragment expected in the message)
    ("CRL block", ROOT.cert_pem + _block("X509 CRL", _BODY), "block 2 in src is a X509 CRL block"),
    ("public key block", _block("PUBLIC KEY", _BODY), "block 1 in src is a PUBLIC KEY block"),
    ("trusted certificate block", _block("TRUSTED CERTIFICATE", _BODY), "only CERTIFICATE"),
    (
        "PEM headers",
        (
            "\n".join([_ROOT_LINES[0], "Proc-Type: 4,ENCRYPTED", "", *_ROOT_LINES[1:]]) + "\n"
        ).encode(),
        "block 1 in src has PEM headers",
    ),
    (
        "garbage before",
        b"subject=CN=Test Root\n" + ROOT.cert_pem,
        "text outside PEM blocks at line 1",
    ),
    ("garbage between", ROOT.cert_pem + b"# org root\n" + INTER.cert_pem, "at line 13"),
    ("garbage after", ROOT.cert_pem + b"\n<html>", "text outside PEM blocks"),
    ("END glued to next BEGIN", ROOT.cert_pem.rstrip() + INTER.cert_pem, "malformed line 12"),
    ("truncated at end", ROOT.cert_pem + INTER.cert_pem[:200], "block 2 in src is truncated"),
    (
        "BEGIN before END",
        ROOT.cert_pem[:300] + b"\n" + INTER.cert_pem,
        "block 1 in src is truncated",
    ),
    (
        "mismatched END label",
        ROOT.cert_pem.replace(b"END CERTIFICATE", b"END X509 CRL"),
        "block 1 in src is truncated or mismatched",
    ),
    (
        "bad base64 character",
        _block("CERTIFICATE", _BODY[:40] + "*" + _BODY[41:]),
        "not valid base64",
    ),
    ("padding in the middle", _block("CERTIFICATE", "AAAA==" + _BODY), "not valid base64"),
    ("base64 length not a multiple of 4", _block("CERTIFICATE", _BODY[:-3]), "not valid base64"),
    ("empty block", _block("CERTIFICATE", ""), "block 1 in src is not valid base64"),
    (
        "DER that does not parse",
        _block("CERTIFICATE", base64.b64encode(b"\x30\x03\x02\x01\x01").decode()),
        "block 1 in src is not a parseable X.509 certificate",
    ),
    (
        "DER with trailing bytes",
        _block("CERTIFICATE", base64.b64encode(ROOT.der + b"\x00\x00").decode()),
        "not a parseable X.509 certificate",
    ),
    ("binary DER instead of PEM", ROOT.der, "src is not PEM text"),
]


@pytest.mark.parametrize(
    ("case", "data", "fragment"), INVALID_PEM_CASES, ids=[c[0] for c in INVALID_PEM_CASES]
)
def test_invalid_pem_is_rejected_naming_source_and_block(
    case: str, data: bytes, fragment: str
) -> None:
    with pytest.raises(CertError) as info:
        parse_certificates(data, source="src")
    assert info.value.reason == "InvalidPEM"
    assert fragment in str(info.value)
    _assert_one_line(info.value)


KEY_FORMS = {
    "PKCS#8": CLIENT.key_pem,
    "SEC1": CLIENT.traditional_key_pem,
    "PKCS#1 RSA": make_leaf("rsa client", INTER, key_type="rsa").traditional_key_pem,
    "encrypted PKCS#8": CLIENT.encrypted_key_pem(b"pw"),
    "encrypted traditional": CLIENT.encrypted_key_pem(b"pw", traditional=True),
    "Ed25519": make_leaf("ed client", INTER, key_type="ed25519").key_pem,
}


@pytest.mark.parametrize("layout", ["key alone", "key after a certificate", "key after garbage"])
@pytest.mark.parametrize("form", list(KEY_FORMS))
def test_private_key_in_ca_source_is_rejected_without_echoing_it(form: str, layout: str) -> None:
    key_pem = KEY_FORMS[form]
    data = {
        "key alone": key_pem,
        "key after a certificate": ROOT.cert_pem + key_pem,
        "key after garbage": b"some notes\n" + key_pem,
    }[layout]
    with pytest.raises(CertError) as info:
        compose_bundle([("Secret org-roots key ca.crt", data)], now=NOW)
    err = info.value
    assert err.reason == "InvalidPEM"
    assert "a private key was found in Secret org-roots key ca.crt" in err.message
    assert "must not be in a CA bundle" in err.message
    _assert_one_line(err)
    _assert_no_key_material(err, key_pem)


# --------------------------------------------------------------------------- bundle


def test_a_server_certificate_next_to_its_cas_is_refused_as_not_a_ca_naming_it() -> None:
    # The contract's BundleValid: "only CA certs", reason NotACA. A pasted full chain is
    # refused (naming the leaf and its source), never silently trimmed.
    with pytest.raises(CertError) as info:
        compose_bundle([("chain", SERVER.full_chain_pem)], now=NOW)
    err = info.value
    assert err.reason == "NotACA"
    assert SERVER.subject in err.message
    assert "in chain" in err.message
    assert "not a CA certificate" in err.message
    assert "remove it" in err.message
    _assert_one_line(err)


def test_certificate_without_basic_constraints_is_not_a_ca() -> None:
    with pytest.raises(CertError) as info:
        compose_bundle([("s", pem_join(ROOT, NO_BC_LEAF))], now=NOW)
    assert info.value.reason == "NotACA"
    assert NO_BC_LEAF.subject in info.value.message


def test_expired_ca_is_dropped_with_warning() -> None:
    bundle = compose_bundle([("s", pem_join(ROOT, EXPIRED_ROOT))], now=NOW)
    assert [c.sha256 for c in bundle.certificates] == [ROOT.fingerprint]
    [warning] = bundle.warnings
    assert warning.startswith("dropped")
    assert EXPIRED_ROOT.subject in warning
    assert "expired at 2029-01-01T00:00:00Z" in warning


def test_not_yet_valid_ca_is_kept_with_warning() -> None:
    bundle = compose_bundle([("s", pem_join(ROOT, FUTURE_ROOT))], now=NOW)
    assert {c.sha256 for c in bundle.certificates} == {ROOT.fingerprint, FUTURE_ROOT.fingerprint}
    [warning] = bundle.warnings
    assert FUTURE_ROOT.subject in warning
    assert "not valid yet (from 2030-06-01T00:00:00Z)" in warning


def test_ca_expiring_within_30_days_is_kept_with_warning() -> None:
    bundle = compose_bundle([("s", pem_join(ROOT, SOON_ROOT))], now=NOW)
    assert SOON_ROOT.fingerprint in {c.sha256 for c in bundle.certificates}
    [warning] = bundle.warnings
    assert SOON_ROOT.subject in warning
    assert "within 30 days" in warning


def test_ca_valid_for_longer_than_30_days_gives_no_warning() -> None:
    assert compose_bundle([("s", ROOT.cert_pem)], now=NOW).warnings == ()


@pytest.mark.parametrize(
    ("case", "sources", "reason", "fragment"),
    [
        ("no sources", [], "Empty", "no certificate at all"),
        ("empty sources", [("a", b""), ("b", b"\n")], "Empty", "a, b hold(s) no certificate"),
        (
            "only leaf certificates",
            [("a", pem_join(SERVER, CLIENT))],
            "NotACA",
            "(and 1 more)",
        ),
        ("only expired CAs", [("a", EXPIRED_ROOT.cert_pem)], "Expired", "has expired"),
        (
            "expired CA and a leaf",
            [("a", EXPIRED_ROOT.cert_pem), ("b", SERVER.cert_pem)],
            "NotACA",
            "in b is not a CA certificate",
        ),
    ],
)
def test_empty_result_is_an_error_with_the_reason_for_it(
    case: str, sources: list[tuple[str, bytes]], reason: str, fragment: str
) -> None:
    with pytest.raises(CertError) as info:
        compose_bundle(sources, now=NOW)
    assert info.value.reason == reason, case
    assert fragment in info.value.message
    _assert_one_line(info.value)


def test_oversized_input_is_rejected_with_size_and_limit() -> None:
    data = pem_join(ROOT, INTER)
    with pytest.raises(CertError) as info:
        compose_bundle([("a", data), ("b", data)], now=NOW, max_bytes=len(data))
    assert info.value.reason == "TooLarge"
    assert f"{2 * len(data)} bytes" in info.value.message
    assert f"limit of {len(data)} bytes" in info.value.message


def test_oversized_output_is_rejected_even_when_the_input_fits() -> None:
    # One-line base64 is shorter than the canonical 64-column re-encoding.
    one_line = _block("CERTIFICATE", _b64_of_pem(ROOT.cert_pem))
    assert len(one_line) < len(ROOT.cert_pem)
    with pytest.raises(CertError) as info:
        compose_bundle([("a", one_line)], now=NOW, max_bytes=len(one_line))
    assert info.value.reason == "TooLarge"
    assert "composed CA bundle" in info.value.message
    assert f"{len(ROOT.cert_pem)} bytes" in info.value.message


def test_bundle_at_exactly_the_limit_is_accepted() -> None:
    bundle = compose_bundle([("a", ROOT.cert_pem)], now=NOW, max_bytes=len(ROOT.cert_pem))
    assert bundle.pem == ROOT.cert_pem


def test_duplicates_are_removed_by_der_sha256() -> None:
    bundle = compose_bundle(
        [("a", pem_join(ROOT, ROOT, INTER)), ("b", pem_join(INTER, ROOT))], now=NOW
    )
    assert len(bundle.certificates) == 2
    assert bundle.pem.count(b"BEGIN CERTIFICATE") == 2


def test_same_subject_with_different_key_is_not_a_duplicate() -> None:
    renewed = make_ca("Test Root CA", key=make_key("ec", "renewed root key"))
    bundle = compose_bundle([("a", pem_join(ROOT, renewed))], now=NOW)
    assert len(bundle.certificates) == 2


def test_bundle_is_sorted_by_subject_then_sha256() -> None:
    renewed = make_ca("Test Root CA", key=make_key("ec", "renewed root key"))
    bundle = compose_bundle(
        [("a", pem_join(ROOT, OTHER_ROOT, renewed, INTER, FUTURE_ROOT))], now=NOW
    )
    keys = [(c.subject, c.sha256) for c in bundle.certificates]
    assert keys == sorted(keys)
    assert [c.subject for c in bundle.certificates] == [
        "CN=Future Root CA,O=dtrtrust tests",
        "CN=Other Root CA,O=dtrtrust tests",
        "CN=Test Intermediate CA,O=dtrtrust tests",
        "CN=Test Root CA,O=dtrtrust tests",
        "CN=Test Root CA,O=dtrtrust tests",
    ]


def test_bundle_pem_is_canonical_reencoding_from_der_in_summary_order() -> None:
    messy = (
        pem_join(INTER, ROOT).replace(b"\n", b"\r\n").replace(b"-----BEGIN", b"\r\n  -----BEGIN")
    )
    bundle = compose_bundle([("a", messy)], now=NOW)
    assert bundle.pem == pem_join(INTER, ROOT)  # Intermediate sorts before Root
    assert [c.sha256 for c in bundle.certificates] == [INTER.fingerprint, ROOT.fingerprint]
    assert bundle.pem.endswith(b"-----END CERTIFICATE-----\n")
    assert b"\r" not in bundle.pem
    assert all(len(line) <= 64 for line in bundle.pem.splitlines())


def test_bundle_sha256_is_the_hash_of_the_bundle_bytes() -> None:
    bundle = compose_bundle([("a", pem_join(ROOT, INTER))], now=NOW)
    assert bundle.sha256 == "sha256:" + hashlib.sha256(bundle.pem).hexdigest()


def test_bundle_not_after_is_the_earliest_not_after() -> None:
    bundle = compose_bundle([("a", pem_join(ROOT, SOON_ROOT, FUTURE_ROOT))], now=NOW)
    assert bundle.not_after == NOW + 10 * DAY


def test_one_invalid_source_fails_the_bundle_naming_that_source() -> None:
    with pytest.raises(CertError) as info:
        compose_bundle([("inline pem", ROOT.cert_pem), ("ConfigMap org-roots", b"oops\n")], now=NOW)
    assert info.value.reason == "InvalidPEM"
    assert "ConfigMap org-roots" in info.value.message


def test_the_error_names_every_source_of_a_refused_certificate_in_sorted_order() -> None:
    with pytest.raises(CertError) as info:
        compose_bundle(
            [("z-source", pem_join(ROOT, SERVER)), ("a-source", SERVER.cert_pem)], now=NOW
        )
    assert "in a-source, z-source" in info.value.message


def test_warning_names_every_source_of_a_dropped_certificate_in_sorted_order() -> None:
    bundle = compose_bundle(
        [("z-source", pem_join(ROOT, EXPIRED_ROOT)), ("a-source", EXPIRED_ROOT.cert_pem)],
        now=NOW,
    )
    [warning] = bundle.warnings
    assert "from a-source, z-source" in warning


# --------------------------------------------------------------------------- summaries


def test_summary_to_status_uses_camel_case_keys_and_rfc3339_z_times() -> None:
    status = describe(INTER.cert).to_status()
    assert status == {
        "subject": "CN=Test Intermediate CA,O=dtrtrust tests",
        "issuer": "CN=Test Root CA,O=dtrtrust tests",
        "sha256": INTER.fingerprint,
        "notBefore": "2025-01-01T00:00:00Z",
        "notAfter": "2035-01-01T00:00:00Z",
        "isCA": True,
    }


def test_describe_gives_aware_utc_times_and_the_der_fingerprint() -> None:
    summary = describe(SERVER.cert)
    assert summary.not_before == dt.datetime(2029, 7, 1, tzinfo=UTC)
    assert summary.not_before.utcoffset() == dt.timedelta(0)
    assert summary.sha256 == "sha256:" + hashlib.sha256(SERVER.der).hexdigest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", summary.sha256)
    assert summary.is_ca is False


def test_summaries_from_pem_keeps_every_certificate_in_input_order() -> None:
    summaries = summaries_from_pem(pem_join(SERVER, EXPIRED_ROOT), "served chain")
    assert [s.sha256 for s in summaries] == [SERVER.fingerprint, EXPIRED_ROOT.fingerprint]
    assert [s.is_ca for s in summaries] == [False, True]


# --------------------------------------------------------------------------- client pair

RSA_CLIENT = make_leaf("rsa client", INTER, key_type="rsa", eku=["clientAuth"], sans=[])
ED_CLIENT = make_leaf("ed client", INTER, key_type="ed25519", eku=["clientAuth"], sans=[])


@pytest.mark.parametrize(
    ("case", "leaf", "key_pem", "label"),
    [
        ("EC PKCS#8", CLIENT, CLIENT.key_pem, b"PRIVATE KEY"),
        ("EC SEC1", CLIENT, CLIENT.traditional_key_pem, b"EC PRIVATE KEY"),
        ("RSA PKCS#1", RSA_CLIENT, RSA_CLIENT.traditional_key_pem, b"RSA PRIVATE KEY"),
        ("RSA PKCS#8", RSA_CLIENT, RSA_CLIENT.key_pem, b"PRIVATE KEY"),
        ("Ed25519 PKCS#8", ED_CLIENT, ED_CLIENT.key_pem, b"PRIVATE KEY"),
    ],
)
def test_client_pair_is_accepted_and_the_key_is_kept_exactly_as_given(
    case: str, leaf: Issued, key_pem: bytes, label: bytes
) -> None:
    pair = validate_client_pair(leaf.cert_pem, key_pem, now=NOW)
    assert pair.key_pem == key_pem, case
    assert pair.key_pem.startswith(b"-----BEGIN " + label + b"-----\n")
    assert pair.cert_pem == leaf.cert_pem
    assert pair.summary == describe(leaf.cert)
    assert pair.warnings == ()


def test_client_key_line_endings_and_surrounding_whitespace_are_normalised() -> None:
    messy = b"\r\n  " + CLIENT.traditional_key_pem.replace(b"\n", b"\r\n") + b"\r\n\r\n"
    pair = validate_client_pair(CLIENT.cert_pem, messy, now=NOW)
    assert pair.key_pem == CLIENT.traditional_key_pem


def test_client_chain_after_the_leaf_is_kept_leaf_first_without_duplicates() -> None:
    given = pem_join(CLIENT, INTER, CLIENT, ROOT).replace(b"\n", b"\r\n")
    pair = validate_client_pair(given, CLIENT.key_pem, now=NOW)
    assert pair.cert_pem == pem_join(CLIENT, INTER, ROOT)
    assert pair.summary.sha256 == CLIENT.fingerprint


@pytest.mark.parametrize(
    ("case", "eku"),
    [
        ("no EKU extension", None),
        ("clientAuth", ["clientAuth"]),
        ("anyExtendedKeyUsage", ["any"]),
        ("serverAuth and clientAuth", ["serverAuth", "clientAuth"]),
    ],
)
def test_client_auth_is_allowed_when_the_eku_permits_it(case: str, eku: list[str] | None) -> None:
    leaf = make_leaf("eku client", INTER, eku=eku, sans=[])
    assert validate_client_pair(leaf.cert_pem, leaf.key_pem, now=NOW).summary.subject


def test_client_certificate_expiring_within_30_days_warns() -> None:
    leaf = make_leaf("short client", INTER, eku=["clientAuth"], not_after=NOW + 29 * DAY)
    pair = validate_client_pair(leaf.cert_pem, leaf.key_pem, now=NOW)
    [warning] = pair.warnings
    assert "within 30 days" in warning
    assert leaf.subject in warning


_OTHER_KEY = make_leaf("other client", INTER, eku=["clientAuth"])
_EXPIRED = make_leaf(
    "old client", INTER, eku=["clientAuth"], not_before=NOW - 400 * DAY, not_after=NOW - DAY
)
_FUTURE = make_leaf("new client", INTER, eku=["clientAuth"], not_before=NOW + DAY)
_SERVER_ONLY = make_leaf("server-only", INTER, eku=["serverAuth"])
_DAMAGED_KEY = _block("PRIVATE KEY", base64.b64encode(b"\x30\x03\x02\x01\x00").decode())
_DSA_KEY = dsa.generate_private_key(1024).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)

CLIENT_FAILURES = [
    # (case, cert_pem, key_pem, reason, fragment)
    (
        "encrypted PKCS#8",
        CLIENT.cert_pem,
        CLIENT.encrypted_key_pem(b"pw"),
        "EncryptedKey",
        "openssl pkey",
    ),
    (
        "encrypted traditional",
        CLIENT.cert_pem,
        CLIENT.encrypted_key_pem(b"pw", traditional=True),
        "EncryptedKey",
        "is encrypted",
    ),
    (
        "key of another certificate",
        CLIENT.cert_pem,
        _OTHER_KEY.key_pem,
        "KeyMismatch",
        "does not belong",
    ),
    (
        "RSA key for an EC certificate",
        CLIENT.cert_pem,
        RSA_CLIENT.key_pem,
        "KeyMismatch",
        "does not belong",
    ),
    (
        "key of a chain certificate",
        pem_join(CLIENT, INTER),
        INTER.key_pem,
        "KeyMismatch",
        "first certificate must be the client's own",
    ),
    ("expired", _EXPIRED.cert_pem, _EXPIRED.key_pem, "Expired", "expired at"),
    ("not yet valid", _FUTURE.cert_pem, _FUTURE.key_pem, "NotYetValid", "not valid until"),
    (
        "EKU without clientAuth",
        _SERVER_ONLY.cert_pem,
        _SERVER_ONLY.key_pem,
        "NotClientAuth",
        "lacks clientAuth",
    ),
    ("key file with garbage", CLIENT.cert_pem, b"not a key", "InvalidKey", "outside PEM"),
    ("empty key file", CLIENT.cert_pem, b"", "InvalidKey", "no PEM private key"),
    ("two keys", CLIENT.cert_pem, CLIENT.key_pem + CLIENT.key_pem, "InvalidKey", "exactly one"),
    (
        "certificate in the key file",
        CLIENT.cert_pem,
        CLIENT.key_pem + CLIENT.cert_pem,
        "InvalidKey",
        "holds a certificate",
    ),
    ("damaged key", CLIENT.cert_pem, _DAMAGED_KEY, "InvalidKey", "cannot be read"),
    ("truncated key", CLIENT.cert_pem, CLIENT.key_pem[:100], "InvalidKey", "truncated"),
    ("DSA key", CLIENT.cert_pem, _DSA_KEY, "InvalidKey", "RSA, EC or Ed25519"),
    (
        "OpenSSH key",
        CLIENT.cert_pem,
        _block("OPENSSH PRIVATE KEY", _BODY),
        "InvalidKey",
        "ssh-keygen",
    ),
    (
        "public key instead",
        CLIENT.cert_pem,
        _block("PUBLIC KEY", _BODY),
        "InvalidKey",
        "not a private key",
    ),
    (
        "key in the certificate file",
        CLIENT.cert_pem + CLIENT.key_pem,
        CLIENT.key_pem,
        "InvalidPEM",
        "a private key was found in the client certificate file",
    ),
    ("empty certificate file", b"", CLIENT.key_pem, "InvalidPEM", "holds no certificate"),
]


@pytest.mark.parametrize(
    ("case", "cert_pem", "key_pem", "reason", "fragment"),
    CLIENT_FAILURES,
    ids=[c[0] for c in CLIENT_FAILURES],
)
def test_invalid_client_pair_is_rejected_with_reason_and_no_key_material(
    case: str, cert_pem: bytes, key_pem: bytes, reason: str, fragment: str
) -> None:
    with pytest.raises(CertError) as info:
        validate_client_pair(cert_pem, key_pem, now=NOW)
    assert info.value.reason == reason
    assert fragment in info.value.message
    _assert_one_line(info.value)
    _assert_no_key_material(info.value, key_pem)


def test_client_errors_name_the_sources_given() -> None:
    with pytest.raises(CertError) as info:
        validate_client_pair(
            CLIENT.cert_pem,
            _OTHER_KEY.key_pem,
            now=NOW,
            cert_source="Secret dtr-client tls.crt",
            key_source="Secret dtr-client tls.key",
        )
    assert "Secret dtr-client tls.crt" in info.value.message
    assert "Secret dtr-client tls.key" in info.value.message


# --------------------------------------------------------------------------- fingerprints

_HEX = hashlib.sha256(b"x").hexdigest()
_OPENSSL = ":".join(_HEX[i : i + 2] for i in range(0, 64, 2)).upper()


@pytest.mark.parametrize(
    "text",
    [
        f"sha256:{_HEX}",
        f"SHA256:{_HEX.upper()}",
        f"  sha256:{_HEX}\n",
        _OPENSSL,
        _OPENSSL.lower(),
        f"\t{_OPENSSL} ",
        f"sha256 Fingerprint={_OPENSSL}",
        f"SHA256 Fingerprint={_OPENSSL}\n",
    ],
)
def test_fingerprint_in_accepted_forms_is_canonicalised(text: str) -> None:
    assert parse_fingerprint(text) == f"sha256:{_HEX}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        _HEX,  # bare hex: which digest? say so instead of guessing
        f"sha256:{_HEX[:-1]}",
        f"sha256:{_HEX}00",
        f"sha1:{_HEX[:40]}",
        f"sha256:{_HEX[:-1]}g",
        f"sha256: {_HEX}",
        _OPENSSL[:-3],  # 31 octets
        _OPENSSL + ":AB",  # 33 octets
        _OPENSSL.replace(":", " "),
        _OPENSSL.replace(":", "", 1),
        "md5 Fingerprint=" + _OPENSSL,
    ],
)
def test_fingerprint_in_any_other_form_is_rejected_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(CertError) as info:
        parse_fingerprint(text)
    assert info.value.reason == "InvalidFingerprint"
    assert "sha256:<64 hex digits>" in info.value.message
    assert "AB:CD:" in info.value.message
    assert "openssl x509 -in ca.crt -noout -fingerprint -sha256" in info.value.message


def test_fingerprint_der_is_sha256_of_the_der() -> None:
    assert fingerprint_der(ROOT.der) == ROOT.fingerprint


def test_openssl_fingerprint_formats_as_openssl_prints_it() -> None:
    assert openssl_fingerprint(ROOT.fingerprint) == ROOT.openssl_fingerprint


# --------------------------------------------------------------------------- content hash


def test_content_hash_does_not_depend_on_mapping_order() -> None:
    a = {"ca.crt": b"A", "client.cert": b"B", "client.key": b"C"}
    b = dict(reversed(list(a.items())))
    assert content_hash(a) == content_hash(b)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"a": b"bc"}, {"ab": b"c"}),  # name/content boundary
        ({"a": b""}, {}),  # an empty file is still a file
        ({"a": b"x", "b": b""}, {"a": b"x"}),
        ({"ca.crt": b"A"}, {"ca.crt": b"B"}),
        ({"ca.crt": b"A"}, {"ca.cert": b"A"}),
    ],
)
def test_content_hash_framing_is_unambiguous(
    left: dict[str, bytes], right: dict[str, bytes]
) -> None:
    assert content_hash(left) != content_hash(right)


def test_content_hash_is_stable_across_releases() -> None:
    # A change here makes every node rewrite its files after an upgrade: change it on purpose only.
    assert content_hash({"ca.crt": b"A\n", "client.key": b"K\n"}) == (
        "sha256:"
        + hashlib.sha256(
            b"dtrtrust-content-v1\0"
            + (2).to_bytes(8, "big")
            + (6).to_bytes(8, "big")
            + b"ca.crt"
            + (2).to_bytes(8, "big")
            + b"A\n"
            + (10).to_bytes(8, "big")
            + b"client.key"
            + (2).to_bytes(8, "big")
            + b"K\n"
        ).hexdigest()
    )


# --------------------------------------------------------------------------- PKCS#12

_FAST = 1000  # KDF rounds for tests; the default is measured in test_pkcs12_default_...


def _der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for n in parts[2:]:
        chunk = [n & 0x7F]
        while n > 0x7F:
            n >>= 7
            chunk.append(0x80 | (n & 0x7F))
        body += bytes(reversed(chunk))
    return bytes([0x06, len(body)]) + bytes(body)


def test_pkcs12_holds_key_leaf_and_deduplicated_cas_under_the_password() -> None:
    blob = to_pkcs12(
        pem_join(CLIENT, INTER),
        CLIENT.key_pem,
        pem_join(INTER, ROOT),
        password=b"s3cret",
        name="dtr client",
        kdf_rounds=_FAST,
    )
    loaded = pkcs12.load_pkcs12(blob, b"s3cret")
    assert loaded.key is not None
    assert loaded.cert is not None
    assert loaded.cert.certificate == CLIENT.cert
    assert loaded.cert.friendly_name == b"dtr client"
    assert [c.certificate for c in loaded.additional_certs] == [INTER.cert, ROOT.cert]
    assert loaded.key.public_key() == CLIENT.key.public_key()
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's own error type
        pkcs12.load_pkcs12(blob, b"wrong")


def test_pkcs12_uses_pbes2_with_aes_256() -> None:
    blob = to_pkcs12(
        CLIENT.cert_pem, CLIENT.key_pem, None, password=b"pw", name="c", kdf_rounds=_FAST
    )
    assert _der_oid("1.2.840.113549.1.5.13") in blob  # PBES2
    assert _der_oid("2.16.840.1.101.3.4.1.42") in blob  # aes256-CBC
    assert _der_oid("1.2.840.113549.1.12.1.3") not in blob  # not the legacy 3DES PBE


def test_pkcs12_legacy_uses_3des_and_a_sha1_mac_that_keychain_imports() -> None:
    blob = to_pkcs12(CLIENT.cert_pem, CLIENT.key_pem, None, password=b"pw", name="c", legacy=True)
    assert _der_oid("1.2.840.113549.1.12.1.3") in blob  # pbeWithSHAAnd3-KeyTripleDES-CBC
    assert _der_oid("1.3.14.3.2.26") in blob  # SHA-1, the MAC's digest
    assert _der_oid("1.2.840.113549.1.5.13") not in blob  # no PBES2
    assert b"\x02\x02" + LEGACY_KDF_ROUNDS.to_bytes(2, "big") in blob  # DER INTEGER
    loaded = pkcs12.load_pkcs12(blob, b"pw")
    assert loaded.cert is not None
    assert loaded.cert.certificate == CLIENT.cert


def test_pkcs12_default_kdf_rounds_are_strong() -> None:
    blob = to_pkcs12(
        RSA_CLIENT.cert_pem, RSA_CLIENT.traditional_key_pem, None, password=b"pw", name="c"
    )
    assert b"\x02\x03" + PKCS12_KDF_ROUNDS.to_bytes(3, "big") in blob  # DER INTEGER
    assert pkcs12.load_pkcs12(blob, b"pw").cert is not None


@pytest.mark.parametrize(
    ("case", "cert_pem", "key_pem", "password", "reason"),
    [
        ("key mismatch", CLIENT.cert_pem, _OTHER_KEY.key_pem, b"pw", "KeyMismatch"),
        ("encrypted key", CLIENT.cert_pem, CLIENT.encrypted_key_pem(b"x"), b"pw", "EncryptedKey"),
        ("empty password", CLIENT.cert_pem, CLIENT.key_pem, b"", "InvalidPassword"),
        (
            "key in certificate file",
            CLIENT.cert_pem + CLIENT.key_pem,
            CLIENT.key_pem,
            b"pw",
            "InvalidPEM",
        ),
    ],
)
def test_pkcs12_rejects_unusable_input(
    case: str, cert_pem: bytes, key_pem: bytes, password: bytes, reason: str
) -> None:
    with pytest.raises(CertError) as info:
        to_pkcs12(cert_pem, key_pem, None, password=password, name="c", kdf_rounds=_FAST)
    assert info.value.reason == reason, case


def test_pkcs12_ca_file_is_strict_pem() -> None:
    with pytest.raises(CertError) as info:
        to_pkcs12(
            CLIENT.cert_pem, CLIENT.key_pem, b"junk", password=b"pw", name="c", kdf_rounds=_FAST
        )
    assert info.value.reason == "InvalidPEM"
    assert "the CA file" in info.value.message


def test_naive_now_is_a_programming_error_not_a_certificate_error() -> None:
    naive = NOW.replace(tzinfo=None)
    with pytest.raises(TypeError, match="timezone-aware"):
        compose_bundle([("a", ROOT.cert_pem)], now=naive)
    with pytest.raises(TypeError, match="timezone-aware"):
        validate_client_pair(CLIENT.cert_pem, CLIENT.key_pem, now=naive)
