"""The writer SIGKILLed at random points while two readers keep reading: no partial file
and no missing file, ever; after every kill every file is complete, and the next run
leaves one complete set.

Two readers: one opens the directory and then each file relative to it; the other reads
the way dockerd does (``ReadCertsDirectory``: list the directory, then ``ca.crt``,
``client.cert`` and ``client.key`` by path), as every real reader of certs.d does.
Files are replaced one rename each, so a reader whose reads straddle a rotation can pair
a certificate with the other generation's key, and a writer killed between two renames
leaves a mixed set until its next run. Both are counted and printed, split into "while a
writer ran" and "after a kill, before the next run" (docs/BENCHMARKS.md), not
forbidden: a partial file is.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificate

from certfactory import make_ca, make_pki, pem_join

ADDR = "registry.test:5443"
NAMES = ("ca.crt", "client.cert", "client.key")
MIN_REWRITES = 1000
MIN_KILLS = 25
# A bound, not a speed target: the loop ends as soon as both minimums are reached
# (about 12 s here); the bound only stops a broken writer from hanging the suite.
DEADLINE_S = 120.0
LOOP = Path(__file__).with_name("writer_loop.py")
TMP_SUFFIX = ".dtrtrust-new"  # the writer's temp files: hidden, never a *.crt/.cert/.key


def generation(tag: str) -> dict[str, bytes]:
    """A complete set: CA bundle (padded with extra CAs so a torn file would show), client
    certificate and its key."""
    pki = make_pki(ADDR, prefix=f"{tag} ")
    extras = [make_ca(f"{tag} extra CA {i}") for i in range(24)]
    ca = pem_join(pki.root, pki.intermediate, *extras)
    files = {"ca.crt": ca, "client.cert": pki.client.cert_pem, "client.key": pki.client.key_pem}
    cert_pub = load_pem_x509_certificate(files["client.cert"]).public_key()
    key_pub = load_pem_private_key(files["client.key"], None).public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert cert_pub.public_bytes(der, spki) == key_pub.public_bytes(der, spki)
    return files


@dataclass
class Phase:
    """Whether a writer process is running (from its first completed write to its kill)."""

    alive: bool = False
    epoch: int = 0  # bumped at every kill

    def snapshot(self) -> tuple[bool, int]:
        return self.alive, self.epoch

    def live_throughout(self, start: tuple[bool, int]) -> bool:
        return start[0] and (self.alive, self.epoch) == start


@dataclass
class Tally:
    reads: int = 0  # complete, consistent sets seen
    absent: int = 0  # directory not there yet (before the first write)
    vanished: int = 0  # a generation removed while being read: the reader retries
    partial: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # while a writer ran
    mismatched_after_kill: int = 0  # a mixed set a killed writer left, before the next run


def classify(contents: dict[str, bytes], gens: list[dict[str, bytes]]) -> tuple[str, str]:
    """("ok" | "partial" | "mismatch", detail)."""
    which = {}
    for name, data in contents.items():
        owners = [i for i, g in enumerate(gens) if g[name] == data]
        if not owners:
            return "partial", f"{name}: {len(data)} bytes match no generation"
        which[name] = owners[0]
    if len(set(which.values())) != 1:
        return "mismatch", repr(which)
    return "ok", ""


def read_set(live: Path) -> dict[str, bytes] | None:
    """Like a careful client: open the directory, then each file relative to it.
    None when the directory is absent; FileNotFoundError when a file vanished."""
    try:
        dfd = os.open(live, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        out = {}
        for name in NAMES:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
            with os.fdopen(fd, "rb") as fh:
                out[name] = fh.read()
        return out
    finally:
        os.close(dfd)


def read_by_path(live: Path) -> dict[str, bytes] | None:
    """Like dockerd: list the directory, then open every file by its full path, in the
    listing's (sorted) order. None when the directory is absent."""
    try:
        listed = sorted(os.listdir(live))
    except FileNotFoundError:
        return None
    out = {}
    for name in NAMES:
        if name not in listed:
            raise FileNotFoundError(f"{name} not listed: {listed}")
        out[name] = (live / name).read_bytes()
    return out


@dataclass
class PathTally:
    reads: int = 0  # sets read (complete or not)
    live_reads: int = 0  # of which while a writer ran
    absent: int = 0
    missing: list[str] = field(default_factory=list)  # a listed file gone when opened
    partial: list[str] = field(default_factory=list)
    pair_mismatched: int = 0  # client.cert and client.key of different generations...
    pair_mismatched_after_kill: int = 0  # ...of which read after a kill, before the next run
    ca_mismatched: int = 0  # the pair consistent, ca.crt of the other generation


def path_reader(
    live: Path,
    gens: list[dict[str, bytes]],
    tally: PathTally,
    stop: threading.Event,
    phase: Phase,
) -> None:
    while not stop.is_set():
        start = phase.snapshot()
        try:
            contents = read_by_path(live)
        except FileNotFoundError as exc:
            tally.missing.append(str(exc))
            continue
        if contents is None:
            tally.absent += 1
            time.sleep(0.001)
            continue
        live_read = phase.live_throughout(start)
        tally.reads += 1
        tally.live_reads += live_read
        verdict, detail = classify(contents, gens)
        if verdict == "partial":
            tally.partial.append(detail)
        elif verdict == "mismatch":
            pair = {k: contents[k] for k in ("client.cert", "client.key")}
            if classify(pair, gens)[0] == "mismatch":
                tally.pair_mismatched += 1
                tally.pair_mismatched_after_kill += not live_read
            else:
                tally.ca_mismatched += 1
        time.sleep(0.0002)


def reader(
    live: Path, gens: list[dict[str, bytes]], tally: Tally, stop: threading.Event, phase: Phase
) -> None:
    while not stop.is_set():
        start = phase.snapshot()
        try:
            contents = read_set(live)
        except FileNotFoundError:
            tally.vanished += 1
            continue
        if contents is None:
            tally.absent += 1
            time.sleep(0.001)
            continue
        verdict, detail = classify(contents, gens)
        time.sleep(0.0002)  # thousands of reads a second, without starving the writer
        if verdict == "ok":
            tally.reads += 1
        elif verdict == "partial":
            tally.partial.append(detail)
        elif phase.live_throughout(start):
            tally.mismatched.append(detail)
        else:
            tally.mismatched_after_kill += 1


def wait_for_writes(
    proc: subprocess.Popen[bytes], count: int, timeout: float, phase: Phase
) -> bytes:
    """Read the writer's output until it reported ``count`` completed writes; the
    phase is "alive" from its first one (which repaired what the last kill left)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while seen.count(b"w\n") < count and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.05)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            if b"w\n" in seen:
                phase.alive = True
    return seen


@pytest.mark.slow
def test_sigkilled_writer_never_exposes_a_partial_file_or_a_cert_without_its_key(
    tmp_path: Path,
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    gens = [generation("gen0"), generation("gen1")]
    gens_dir = tmp_path / "gens"
    for i, g in enumerate(gens):
        (gens_dir / str(i)).mkdir(parents=True)
        for name, data in g.items():
            (gens_dir / str(i) / name).write_bytes(data)
    live = host / "etc/docker/certs.d" / ADDR
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    rng = random.Random(20300101)

    tally = Tally()
    by_path = PathTally()
    phase = Phase()
    stop = threading.Event()
    threads = [
        threading.Thread(target=reader, args=(live, gens, tally, stop, phase), daemon=True),
        threading.Thread(target=path_reader, args=(live, gens, by_path, stop, phase), daemon=True),
    ]
    for thread in threads:
        thread.start()
    rewrites = kills = 0
    errors: list[str] = []
    after_kill: list[str] = []
    mixed_after_kill = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < DEADLINE_S and (
            rewrites < MIN_REWRITES or kills < MIN_KILLS
        ):
            proc = subprocess.Popen(
                [sys.executable, str(LOOP), str(host), str(gens_dir), ADDR],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            out = wait_for_writes(proc, rng.randint(1, 30), timeout=10, phase=phase)
            # Kill at a random point of a write (one takes a few ms): mid-file,
            # mid-swap, mid-record, mid-cleanup.
            time.sleep(rng.uniform(0, 0.005))
            phase.alive = False
            phase.epoch += 1
            proc.send_signal(signal.SIGKILL)
            rest, err = proc.communicate()
            kills += 1
            lines = (out + rest).decode().splitlines()
            rewrites += lines.count("w")
            errors += [line for line in lines if line.startswith("e ")]
            assert b"Traceback" not in err, err.decode()[-2000:]

            # Nobody is writing now: every file is there and complete (plus, at most, the
            # hidden temp files of the interrupted write); a kill between two renames
            # leaves a mixed set, which the next run completes.
            entries = sorted(n for n in os.listdir(live) if not n.endswith(TMP_SUFFIX))
            if entries != sorted(NAMES):
                after_kill.append(f"kill {kills}: entries {entries}")
                continue
            verdict, detail = classify(read_set(live) or {}, gens)
            if verdict == "mismatch":
                mixed_after_kill += 1
            elif verdict != "ok":
                after_kill.append(f"kill {kills}: {verdict} {detail}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)

    live_pairs = by_path.pair_mismatched - by_path.pair_mismatched_after_kill
    print(
        f"\nrewrites={rewrites} kills={kills} mixed_sets_left_by_a_kill={mixed_after_kill} "
        f"in {time.monotonic() - started:.1f}s\n"
        f"dir-fd reader: reads={tally.reads} vanished={tally.vanished} "
        f"partial={len(tally.partial)} mismatched_while_writing={len(tally.mismatched)} "
        f"mismatched_after_kill={tally.mismatched_after_kill}\n"
        f"path reader: reads={by_path.reads} (while writing {by_path.live_reads}) "
        f"pair_mismatched={by_path.pair_mismatched} "
        f"(while writing {live_pairs} = {live_pairs / max(by_path.live_reads, 1):.4%} "
        f"of those reads; after a kill {by_path.pair_mismatched_after_kill}) "
        f"ca_only_mismatched={by_path.ca_mismatched} "
        f"partial={len(by_path.partial)} missing={len(by_path.missing)}"
    )
    assert errors == []
    assert after_kill == []
    assert tally.partial == []
    assert by_path.partial == []
    assert by_path.missing == []
    assert by_path.reads > 0
    assert rewrites >= MIN_REWRITES
    assert kills >= MIN_KILLS
    assert tally.reads > 0
    # The next run removes what the last kill left behind.
    done = subprocess.run(
        [sys.executable, str(LOOP), str(host), str(gens_dir), ADDR, "--once"],
        capture_output=True,
        env=env,
        check=True,
    )
    assert done.stdout.decode().splitlines() in (["w"], [])
    assert sorted(os.listdir(live)) == sorted(NAMES)
    assert classify(read_set(live) or {}, gens)[0] == "ok"
