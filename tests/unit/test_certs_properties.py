"""Property tests of the certificate core: the bundle is a function of the certificate set only."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from certfactory import NOW, make_ca
from dtrtrust.core.bundle import Bundle, compose_bundle
from dtrtrust.core.errors import CertError
from dtrtrust.core.fingerprints import content_hash, openssl_fingerprint, parse_fingerprint

UTC = dt.UTC

_ROOTS = [make_ca(f"Property Root {i}") for i in range(3)]
POOL = [
    *_ROOTS,
    make_ca("Property Intermediate", parent=_ROOTS[0], path_length=0),
    make_ca("Property Root 0", key_type="rsa"),  # same subject as another, different key
    make_ca(  # dropped: expired
        "Property Expired Root",
        not_before=dt.datetime(2020, 1, 1, tzinfo=UTC),
        not_after=dt.datetime(2025, 1, 1, tzinfo=UTC),
    ),
]
SEPARATORS = ["", "\n", "\n\n", "  \n", "\t\n", "\r\n", " \r\n \r\n"]

_settings = settings(max_examples=60, deadline=None)


@st.composite
def arrangements(draw: st.DrawFn) -> tuple[frozenset[int], list[tuple[str, bytes]]]:
    """A non-empty set of pool certificates (with at least one valid CA), arranged as 1..3
    sources in any order, with duplicates, whitespace between blocks and CRLF line endings."""
    chosen = draw(st.sets(st.integers(0, len(POOL) - 1), min_size=1))
    if not chosen & {0, 1, 2, 3, 4}:
        chosen = chosen | {draw(st.integers(0, 4))}
    order = draw(st.permutations(sorted(chosen)))
    dupes = draw(st.lists(st.sampled_from(sorted(chosen)), max_size=4))
    items = list(order) + dupes
    items = draw(st.permutations(items))
    cuts = sorted(draw(st.lists(st.integers(0, len(items)), max_size=2)))
    sources: list[tuple[str, bytes]] = []
    bounds = [0, *cuts, len(items)]
    for n, (start, stop) in enumerate(itertools.pairwise(bounds)):
        text = draw(st.sampled_from(SEPARATORS))
        for i in items[start:stop]:
            text += POOL[i].cert_pem.decode() + draw(st.sampled_from(SEPARATORS))
        if draw(st.booleans()):
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        sources.append((f"source {n}", text.encode()))
    return frozenset(chosen), sources


def _reference(chosen: frozenset[int]) -> Bundle:
    """The bundle of the set, given once, each certificate once, in pool order, LF endings."""
    pem = b"".join(POOL[i].cert_pem for i in sorted(chosen))
    return compose_bundle([("reference", pem)], now=NOW)


@_settings
@given(arrangements())
def test_bundle_bytes_and_hash_depend_only_on_the_certificate_set(
    arranged: tuple[frozenset[int], list[tuple[str, bytes]]],
) -> None:
    chosen, sources = arranged
    bundle = compose_bundle(sources, now=NOW)
    reference = _reference(chosen)
    assert bundle.pem == reference.pem
    assert bundle.sha256 == reference.sha256
    assert bundle.certificates == reference.certificates


@_settings
@given(arrangements(), st.randoms(use_true_random=False))
def test_shuffling_the_sources_changes_neither_bytes_nor_warnings(
    arranged: tuple[frozenset[int], list[tuple[str, bytes]]], rnd: random.Random
) -> None:
    _, sources = arranged
    shuffled = list(sources)
    rnd.shuffle(shuffled)
    first = compose_bundle(sources, now=NOW)
    second = compose_bundle(shuffled, now=NOW)
    assert first == second


@_settings
@given(st.binary(min_size=32, max_size=32), st.booleans(), st.sampled_from(["", " ", "\n", "\t "]))
def test_parse_fingerprint_round_trips_both_forms(digest: bytes, upper: bool, pad: str) -> None:
    canonical = "sha256:" + digest.hex()
    openssl = ":".join(f"{b:02X}" for b in digest)
    sha_form = canonical.upper() if upper else canonical
    colon_form = openssl if upper else openssl.lower()
    assert parse_fingerprint(pad + sha_form + pad) == canonical
    assert parse_fingerprint(pad + colon_form + pad) == canonical
    assert openssl_fingerprint(canonical) == openssl
    assert parse_fingerprint(openssl_fingerprint(canonical)) == canonical


@_settings
@given(st.text(max_size=120))
def test_parse_fingerprint_returns_canonical_form_or_invalid_fingerprint(text: str) -> None:
    assert re.fullmatch(r"sha256:[0-9a-f]{64}|InvalidFingerprint", _outcome(text))


def _outcome(text: str) -> str:
    try:
        return parse_fingerprint(text)
    except CertError as err:
        return err.reason


@_settings
@given(st.dictionaries(st.text(min_size=1, max_size=12), st.binary(max_size=16), max_size=5))
def test_content_hash_does_not_depend_on_insertion_order(files: dict[str, bytes]) -> None:
    reversed_files = dict(reversed(list(files.items())))
    assert content_hash(files) == content_hash(reversed_files)
