"""Helper for test_writer_crash: rewrite one address directory forever.

usage: writer_loop.py HOST_ROOT GENERATIONS_DIR ADDRESS [--once]
GENERATIONS_DIR holds 0/ and 1/, each with ca.crt, client.cert, client.key. Every
sync switches to the other generation; one line "w" per completed write, "e <msg>"
per failed one, on stdout (flushed), until the process is killed. With --once: one
sync of generation 0, then exit.

DTRTRUST_RENAME_ORDER=name,name,... overrides the writer's rename order (only to
measure alternatives for docs/BENCHMARKS.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dtrtrust.core.layout import desired_dirs
from dtrtrust.node import writer
from dtrtrust.node.writer import sync_trust


def main() -> None:
    host_root, gens_dir, address = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    once = sys.argv[4:] == ["--once"]
    order = os.environ.get("DTRTRUST_RENAME_ORDER")
    if order:
        writer.RENAME_ORDER = tuple(order.split(","))
    gens = []
    for g in ("0", "1"):
        files = {
            n: (gens_dir / g / n).read_bytes() for n in ("ca.crt", "client.cert", "client.key")
        }
        gens.append(
            desired_dirs(
                [address], ["docker"], files["ca.crt"], (files["client.cert"], files["client.key"])
            )
        )
    i = 0
    while True:
        result = sync_trust(host_root, "crash", gens[i % 2])
        i += 1
        for d in result.dirs:
            if d.action == "written":
                sys.stdout.write("w\n")
            elif d.action != "unchanged":
                sys.stdout.write(f"e {d.action} {d.message}\n")
        if result.error:
            sys.stdout.write(f"e root {result.error}\n")
        sys.stdout.flush()
        if once:
            return


if __name__ == "__main__":
    main()
