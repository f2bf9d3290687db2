"""The ``dtrtrust`` command line: operator, agent, apply, inspect, p12.

Every error a user can cause is one line on stderr with what to do; a traceback is
only shown with ``--debug`` (or DTRTRUST_DEBUG=1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dtrtrust import __version__

log = logging.getLogger("dtrtrust")

# The exit codes of `dtrtrust apply` (fixed by DESIGN.md); the other commands use the same.
EXIT_OK, EXIT_NOT_READY, EXIT_USAGE, EXIT_HOST, EXIT_UNEXPECTED = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Something the user must fix in the command line or its files."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def _client_pair(args: argparse.Namespace) -> tuple[bytes, bytes] | None:
    cert, key = getattr(args, "client_cert", None), getattr(args, "client_key", None)
    if bool(cert) != bool(key):
        raise UsageError("--client-cert and --client-key go together: give both or neither")
    if not cert or not key:
        return None
    return _read(cert, "client certificate"), _read(key, "client key")


def cmd_apply(args: argparse.Namespace) -> int:
    from dtrtrust.cli import apply
    from dtrtrust.net.live import LiveNetwork

    opts = apply.HostOptions(
        host_root=Path(args.host_root),
        system_trust=args.system_trust,
        client_override=_client_pair(args),
    )
    if args.home:
        opts.home = args.home
    try:
        manifests = apply.load_manifests(args.filename)
        if args.delete:
            done = apply.delete_all(manifests, opts)
            for removal in done:
                print(f"{removal.action} {removal.path}")
            restored = sum(r.action == "restored" for r in done)
            print(f"{len(done) - restored} path(s) removed, {restored} restored")
            return EXIT_OK
        results = apply.apply_all(
            manifests, opts, now=dt.datetime.now(dt.UTC), network=LiveNetwork()
        )
    except apply.InputError as exc:
        raise UsageError(str(exc)) from None
    except apply.HostError as exc:
        print(f"dtrtrust: {exc}", file=sys.stderr)
        return EXIT_HOST
    sys.stdout.write(apply.render(results))
    host_problem = False
    for r in results:
        if not r.ready:
            ready = next(c for c in r.status["conditions"] if c["type"] == "Ready")
            print(
                f"dtrtrust: {r.name} is not Ready: {ready['reason']}: {ready['message']}",
                file=sys.stderr,
            )
            host_problem = host_problem or r.host_problem
    if all(r.ready for r in results):
        return EXIT_OK
    return EXIT_HOST if host_problem else EXIT_NOT_READY


def cmd_inspect(args: argparse.Namespace) -> int:
    from dtrtrust.cli import inspect

    report = inspect.inspect_registry(args.url, _client_pair(args), timeout=args.timeout)
    sys.stdout.write(inspect.render(report))
    return EXIT_OK if inspect.healthy(report) else EXIT_NOT_READY


def _password(args: argparse.Namespace) -> bytes:
    if args.password_file:
        data = _read(args.password_file, "password file").rstrip(b"\r\n")
        if not data:
            raise UsageError(f"{args.password_file} is empty: the PKCS#12 needs a password")
        return data
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for a password: use --password-file FILE")
    first = getpass.getpass("Password for the PKCS#12 file: ")
    if not first:
        raise UsageError("an empty password is not allowed")
    if getpass.getpass("Again: ") != first:
        raise UsageError("the passwords do not match")
    return first.encode()


def cmd_p12(args: argparse.Namespace) -> int:
    # Imported here: the agent's entry point must not load cryptography.
    from dtrtrust.core.client import validate_client_pair
    from dtrtrust.core.errors import CertError
    from dtrtrust.core.pkcs12 import to_pkcs12

    cert, key = _read(args.cert, "certificate"), _read(args.key, "key")
    ca = _read(args.ca, "CA file") if args.ca else None
    try:
        pair = validate_client_pair(cert, key, now=dt.datetime.now(dt.UTC))
        for warning in pair.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        blob = to_pkcs12(cert, key, ca, password=_password(args), name=args.name)
    except CertError as exc:
        raise UsageError(exc.message) from None
    out = Path(args.output)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)
    os.chmod(out, 0o600)
    print(f"wrote {out} (mode 0600) for {pair.summary.subject}")
    return EXIT_OK


def cmd_operator(args: argparse.Namespace) -> int:
    from dtrtrust import operator

    return operator.run(args)


def cmd_agent(args: argparse.Namespace) -> int:
    from dtrtrust import agent

    return agent.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dtrtrust",
        allow_abbrev=False,
        description="Put a private registry's TLS trust (CA bundle and client certificate) "
        "where docker, containerd, CRI-O/podman/skopeo and notary read it.",
    )
    parser.add_argument("--version", action="version", version=f"dtrtrust {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # allow_abbrev=False everywhere: "--password X" must not be taken for
    # "--password-file X" (and then echoed in an error message).

    p = sub.add_parser(
        "apply",
        allow_abbrev=False,
        help="reconcile DTRTrust manifests on this host, without a cluster",
        description="Fetch and check the registry CA, compose the bundle, verify it against the "
        "registry, and write ca.crt / client.cert / client.key (and containerd's hosts.toml) "
        "into this host's certs.d directories. Prints the status as YAML; exits 0 only when "
        "every trust is Ready. A failed check writes nothing: the previous files stay.",
    )
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML with DTRTrust manifests and the Secrets/ConfigMaps they reference "
        "(repeatable; - for stdin)",
    )
    p.add_argument(
        "--host-root",
        default="/",
        metavar="DIR",
        help="where the host's / is (default /); files go under DIR/etc/...",
    )
    p.add_argument(
        "--client-cert",
        metavar="FILE",
        help="client certificate PEM (overrides spec.clientCertificate)",
    )
    p.add_argument("--client-key", metavar="FILE", help="its unencrypted private key PEM")
    p.add_argument(
        "--home",
        metavar="DIR",
        help="home directory, as a path on the host (under --host-root), whose "
        ".docker/tls gets the notary files (default $HOME)",
    )
    p.add_argument(
        "--system-trust",
        action="store_true",
        help="also install the CA bundle in the OS trust store: Debian/Ubuntu "
        "(/usr/local/share/ca-certificates + update-ca-certificates) or RHEL/Fedora "
        "(/etc/pki/ca-trust/source/anchors + update-ca-trust extract); removed by --delete",
    )
    p.add_argument(
        "--delete",
        action="store_true",
        help="remove what these trusts wrote on this host and restore files they had replaced",
    )
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser(
        "inspect",
        allow_abbrev=False,
        help="diagnose a registry: CA, chain, fingerprints, host name, client auth",
        description="Show what a registry serves at /ca and in its TLS handshake, whether the "
        "chain validates for its name, what /basic_info reports, and the pinnedSHA256 line to "
        "paste into a DTRTrust.",
    )
    p.add_argument("url", help="registry address or URL, e.g. dtr.example.com:4443")
    p.add_argument("--client-cert", metavar="FILE", help="client certificate PEM to probe with")
    p.add_argument("--client-key", metavar="FILE", help="its private key PEM")
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds allowed for each check (connect, TLS, request, body)",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "p12",
        allow_abbrev=False,
        help="bundle a client certificate and key as PKCS#12 for a browser or keychain",
        description="Write a password-protected PKCS#12 file. The password is asked for on the "
        "terminal or read from --password-file, never taken from the command line.",
    )
    p.add_argument("--cert", required=True, metavar="FILE", help="client certificate PEM")
    p.add_argument("--key", required=True, metavar="FILE", help="its unencrypted private key PEM")
    p.add_argument("--ca", metavar="FILE", help="CA certificates to include")
    p.add_argument("-o", "--output", required=True, metavar="OUT.p12")
    p.add_argument("--name", default="dtrtrust client", help="friendly name shown on import")
    p.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    p.set_defaults(func=cmd_p12)

    p = sub.add_parser("operator", allow_abbrev=False, help="run the Kubernetes operator (kopf)")
    p.add_argument(
        "--namespace",
        default=os.environ.get("DTRTRUST_NAMESPACE", "dtrtrust-system"),
        help="operator namespace: bundle Secrets, source refs, the agent DaemonSet",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("DTRTRUST_METRICS_PORT", "8080")),
        help="port of /metrics and /healthz",
    )
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser(
        "agent", allow_abbrev=False, help="run the node agent (one per node, from the DaemonSet)"
    )
    p.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        required=False,
        help="this node's name (default $NODE_NAME)",
    )
    p.add_argument(
        "--host-root",
        default=os.environ.get("DTRTRUST_HOST_ROOT", "/host"),
        help="where the host's / is mounted",
    )
    p.add_argument("--namespace", default=os.environ.get("DTRTRUST_NAMESPACE", "dtrtrust-system"))
    p.set_defaults(func=cmd_agent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Name the unknown options but never echo their values: one may be a password.
        options = sorted({a.split("=", 1)[0] for a in extra if a.startswith("-")})
        parser.error(
            f"unrecognized option(s): {', '.join(options)}"
            if options
            else f"{len(extra)} unexpected argument(s)"
        )
    debug = args.debug or os.environ.get("DTRTRUST_DEBUG") == "1"
    if args.command != "operator":  # kopf configures the operator's logging itself
        logging.basicConfig(
            level=logging.DEBUG if debug else logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"dtrtrust: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        print(
            f"dtrtrust: unexpected error ({type(exc).__name__}): {exc}. "
            "Run again with --debug for details.",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED
