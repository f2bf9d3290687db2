"""Benchmarks of the pure core and the writer (not tests: numbers for docs/BENCHMARKS.md).

    .venv/bin/python bench/core.py

Prints a Markdown table: median and p95 wall time over repeated runs, and the peak
resident memory of this process at the end.
"""

from __future__ import annotations

import datetime as dt
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import certfactory
from dtrtrust.contract import TARGETS
from dtrtrust.core import layout
from dtrtrust.core.bundle import compose_bundle
from dtrtrust.core.client import validate_client_pair
from dtrtrust.node import writer

NOW = certfactory.NOW
SYSTEM_STORE = Path("/etc/ssl/certs/ca-certificates.crt")


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


TRUSTS = 1000


def many_trusts(
    bundle: bytes, client: tuple[bytes, bytes], count: int
) -> list[tuple[str, int, float, float]]:
    """The agent's periodic resync on a node with ``count`` trusts (one docker directory
    each): nothing changed, so nothing may be written, and the record must not be
    parsed or serialised per directory."""
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        per_trust = [
            (f"trust-{i}", layout.desired_dirs([f"r{i}.example:5000"], ["docker"], bundle, client))
            for i in range(count)
        ]
        for name, dirs in per_trust:
            writer.sync_trust(root, name, dirs)
        record = root / writer.STATE_DIR / "state.json"
        size_kib = record.stat().st_size // 1024
        mtime = record.stat().st_mtime_ns
        name, dirs = per_trust[count // 2]
        rows.append(
            (
                f"writer.sync_trust, 1 dir, nothing changed, {count} trusts on the node "
                f"(record {size_kib} KiB)",
                200,
                *timed(lambda: writer.sync_trust(root, name, dirs), 200),
            )
        )

        def resync() -> None:
            for trust, trust_dirs in per_trust:
                writer.sync_trust(root, trust, trust_dirs)

        rows.append((f"full resync of {count} unchanged trusts", 3, *timed(resync, 3)))
        assert record.stat().st_mtime_ns == mtime, "a no-op resync wrote the record"
    return rows


def main() -> None:
    rows: list[tuple[str, int, float, float]] = []

    pki = [certfactory.make_ca(f"Bench CA {i}") for i in range(20)]
    twenty = b"".join(ca.cert_pem for ca in pki)
    rows.append(
        (
            "compose_bundle, 20 CAs (+20 duplicates)",
            200,
            *timed(lambda: compose_bundle([("a", twenty), ("b", twenty)], now=NOW), 200),
        )
    )

    if SYSTEM_STORE.exists():
        store = SYSTEM_STORE.read_bytes()
        now = dt.datetime.now(dt.UTC)
        rows.append(
            (
                f"compose_bundle, system store ({len(store) // 1024} KiB)",
                50,
                *timed(lambda: compose_bundle([("store", store)], now=now), 50),
            )
        )

    client = certfactory.make_leaf("bench client", pki[0], eku=["clientAuth"])
    rows.append(
        (
            "validate_client_pair (EC P-256)",
            500,
            *timed(lambda: validate_client_pair(client.cert_pem, client.key_pem, now=NOW), 500),
        )
    )

    bundle = compose_bundle([("a", twenty)], now=NOW).pem
    addresses = [f"registry-{i}.example:5000" for i in range(10)]
    dirs = layout.desired_dirs(addresses, list(TARGETS), bundle, (client.cert_pem, client.key_pem))
    rows.append(
        (
            "layout.desired_dirs, 10 addresses x 4 targets",
            500,
            *timed(
                lambda: layout.desired_dirs(
                    addresses, list(TARGETS), bundle, (client.cert_pem, client.key_pem)
                ),
                500,
            ),
        )
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        writer.sync_trust(root, "bench", dirs)
        rows.append(
            (
                "writer.sync_trust, 40 dirs, nothing changed",
                50,
                *timed(lambda: writer.sync_trust(root, "bench", dirs), 50),
            )
        )
        flip = [bundle, compose_bundle([("a", pki[0].cert_pem)], now=NOW).pem]
        state = {"i": 0}

        def rotate() -> None:
            state["i"] += 1
            changed = layout.desired_dirs(
                addresses,
                list(TARGETS),
                flip[state["i"] % 2],
                (client.cert_pem, client.key_pem),
            )
            writer.sync_trust(root, "bench", changed)

        rows.append(("writer.sync_trust, 40 dirs, every ca.crt changed", 30, *timed(rotate, 30)))

    rows += many_trusts(bundle, (client.cert_pem, client.key_pem), TRUSTS)

    print("| operation | runs | median (ms) | p95 (ms) |")
    print("|---|---|---|---|")
    for name, runs, median, p95 in rows:
        print(f"| {name} | {runs} | {median:.2f} | {p95:.2f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of the benchmark process: {peak:.1f} MB")


if __name__ == "__main__":
    main()
