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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        if args.delete and args.dry_run:
            changes = apply.delete_plan(manifests, opts)
            print("would change under the host root")
            print("\n".join(apply.render_changes(changes)))
            return EXIT_OK
        if args.delete:
            done = apply.delete_all(manifests, opts)
            for removal in done:
                print(f"{removal.action} {removal.path}")
            restored = sum(r.action == "restored" for r in done)
            print(f"{len(done) - restored} path(s) removed, {restored} restored")
            return EXIT_OK
        results = apply.apply_all(
            manifests,
            opts,
            now=dt.datetime.now(dt.UTC),
            network=LiveNetwork(),
            dry_run=args.dry_run,
        )
    except apply.InputError as exc:
        raise UsageError(str(exc)) from None
    except apply.HostError as exc:
        print(f"dtrtrust: {exc}", file=sys.stderr)
        return EXIT_HOST
    if args.dry_run:
        text = apply.render_plan(results) if args.output is None else None
        sys.stdout.write(text or apply.render(results, args.output))
        return EXIT_OK if all(r.changes is not None for r in results) else EXIT_NOT_READY
    sys.stdout.write(apply.render(results, args.output or "yaml"))
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
    sys.stdout.write(
        inspect.render(report) if args.output is None else inspect.render_data(report, args.output)
    )
    return EXIT_OK if inspect.healthy(report) else EXIT_NOT_READY


def cmd_status(args: argparse.Namespace) -> int:
    import json

    import yaml

    from dtrtrust.cli import apply

    opts = apply.HostOptions(host_root=Path(args.host_root))
    rows = apply.status_rows(apply.recorded_states(opts))
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    elif args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(rows, sort_keys=False))
    elif not rows:
        print(f"no trust has been applied on this host (no state in {opts.state_dir})")
    else:
        sys.stdout.write(apply.render_status_table(rows))
    return EXIT_OK if all(r["ready"] == "True" for r in rows) else EXIT_NOT_READY


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
        blob = to_pkcs12(
            cert, key, ca, password=_password(args), name=args.name, legacy=args.legacy
        )
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

    # The operator's Config is read from the environment inside kopf's start-up handler.
    os.environ.update(setting_values(args, OPERATOR_SETTINGS))
    return operator.run(args)


def cmd_agent(args: argparse.Namespace) -> int:
    from dtrtrust import agent

    os.environ.update(setting_values(args, AGENT_SETTINGS))
    return agent.run(args)


@dataclass(frozen=True)
class Setting:
    """One daemon setting: a flag, the environment variable behind it, its default.
    The flag wins over the environment, the environment over the default."""

    flag: str
    env: str
    default: str | None  # as text, parsed by ``type`` like a value from the command line
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    shown_default: str | None = None  # when the default is not a literal value
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


LOG_FORMAT = Setting(
    "--log-format",
    "DTRTRUST_LOG_FORMAT",
    "text",
    "log lines as text or one JSON object per line (timestamp, severity, logger, message)",
    choices=("text", "json"),
)
OPERATOR_SETTINGS = (
    Setting(
        "--namespace",
        "DTRTRUST_NAMESPACE",
        "dtrtrust-system",
        "bundle Secrets, source refs, node reports, the agent DaemonSet",
        metavar="NS",
    ),
    Setting(
        "--metrics-port",
        "DTRTRUST_METRICS_PORT",
        "8080",
        "port of /metrics; kopf's /healthz is on the next port",
        int,
        metavar="PORT",
    ),
    Setting(
        "--resync-seconds",
        "DTRTRUST_RESYNC_SECONDS",
        "60",
        "how often every DTRTrust is reconciled again (fetches still honour refreshInterval)",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--registry-timeout",
        "DTRTRUST_REGISTRY_TIMEOUT",
        "10",
        "seconds for each registry check (connect, TLS, request, body)",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--backoff-seconds",
        "DTRTRUST_BACKOFF_SECONDS",
        "10",
        "first retry delay after a temporary failure (registry or API unreachable)",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--max-backoff-seconds",
        "DTRTRUST_MAX_BACKOFF_SECONDS",
        "300",
        "longest retry delay (the delay doubles up to it)",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--agent-image",
        "DTRTRUST_AGENT_IMAGE",
        None,
        "image of the agent DaemonSet the operator keeps in place",
        shown_default="the operator's image, as deploy/ sets it",
        metavar="IMAGE",
    ),
    Setting(
        "--concurrency",
        "DTRTRUST_CONCURRENCY",
        "16",
        "trusts reconciled at once (resync rounds and queued changes)",
        int,
        metavar="N",
    ),
    Setting(
        "--api-connect-timeout",
        "DTRTRUST_API_CONNECT_TIMEOUT",
        "5",
        "seconds to connect to the Kubernetes API, on every call",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--api-read-timeout",
        "DTRTRUST_API_READ_TIMEOUT",
        "30",
        "seconds to wait for the Kubernetes API's answer, on every call",
        float,
        metavar="SECONDS",
    ),
    LOG_FORMAT,
)
AGENT_SETTINGS = (
    Setting(
        "--node-name", "NODE_NAME", None, "this node's name", shown_default="required", metavar="N"
    ),
    Setting(
        "--host-root", "DTRTRUST_HOST_ROOT", "/host", "where the host's / is mounted", metavar="DIR"
    ),
    Setting(
        "--namespace",
        "DTRTRUST_NAMESPACE",
        "dtrtrust-system",
        "namespace of the bundle Secrets and the DTRTrustNode reports",
        metavar="NS",
    ),
    Setting(
        "--resync-seconds",
        "DTRTRUST_AGENT_RESYNC_SECONDS",
        "60",
        "how often the files are re-checked and drift repaired (Secret changes arrive by "
        "watch within a second)",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--backoff-seconds",
        "DTRTRUST_AGENT_BACKOFF_SECONDS",
        "1",
        "first reconnect delay while the API is unreachable (files are kept)",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--max-backoff-seconds",
        "DTRTRUST_AGENT_MAX_BACKOFF_SECONDS",
        "60",
        "longest reconnect delay",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--config-poll-seconds",
        "DTRTRUST_AGENT_CONFIG_POLL_SECONDS",
        "5",
        "how often the runtimes' config files are checked for changes (a change re-runs "
        "the effective-trust checks at once)",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--probe-timeout-seconds",
        "DTRTRUST_AGENT_PROBE_TIMEOUT_SECONDS",
        "5",
        "one probe of the registry with the node's files (connect, TLS, /basic_info)",
        float,
        metavar="SECONDS",
    ),
    Setting(
        "--startup-taint",
        "DTRTRUST_AGENT_STARTUP_TAINT",
        "dtrtrust.io/not-ready",
        "the startup taint removed once every trust selecting the node is in place; an "
        "empty value turns the removal off",
        metavar="KEY",
    ),
    LOG_FORMAT,
)


def _settings(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    for setting in settings:
        # A string default goes through ``type`` like a command-line value, so a bad
        # environment value is reported by argparse, naming the option.
        # A variable set to "" counts (an empty startup taint turns its removal off).
        value = os.environ.get(setting.env, setting.default)
        shown = setting.shown_default or setting.default
        parser.add_argument(
            setting.flag,
            dest=setting.dest,
            default=value,
            type=setting.type,
            choices=setting.choices,
            metavar=setting.metavar if setting.choices is None else None,
            help=f"{setting.help} (default: {shown}; env {setting.env})",
        )


def setting_values(args: argparse.Namespace, settings: Sequence[Setting]) -> dict[str, str]:
    """The resolved settings as environment variables (flag > env > default), for the
    config objects that read the environment."""
    values = {}
    for setting in settings:
        value = getattr(args, setting.dest, None)
        if value is not None:
            values[setting.env] = str(value)
    return values


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
    # The same options after the subcommand (`dtrtrust apply -v ...`). SUPPRESS: a
    # subcommand that does not see them leaves the value parsed before it alone.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log what is done"
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks for unexpected errors",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # allow_abbrev=False everywhere: "--password X" must not be taken for
    # "--password-file X" (and then echoed in an error message).

    p = sub.add_parser(
        "apply",
        allow_abbrev=False,
        parents=[common],
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
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run every check, then print which files would be added, replaced or removed, "
        "and write nothing; exits 0 when every trust would be written",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json"),
        help="print the status as YAML (the default) or as one JSON List, for scripts; with "
        "--dry-run the planned changes are included under dryRun",
    )
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser(
        "inspect",
        allow_abbrev=False,
        parents=[common],
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
    p.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json"),
        help="print the report as YAML or JSON for scripts instead of text",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "status",
        allow_abbrev=False,
        parents=[common],
        help="show the trusts `dtrtrust apply` keeps on this host",
        description="A table of the trusts `dtrtrust apply` has put on this host, from its "
        "recorded state: registry, Ready (with its reason), the number of files in place, "
        "the earliest expiry. Exits 0 when every trust is Ready. Reads only; nothing is "
        "fetched.",
    )
    p.add_argument(
        "--host-root",
        default="/",
        metavar="DIR",
        help="where the host's / is (default /), as given to apply",
    )
    p.add_argument("-o", "--output", choices=("yaml", "json"), help="YAML or JSON for scripts")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "p12",
        allow_abbrev=False,
        parents=[common],
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
    p.add_argument(
        "--legacy",
        action="store_true",
        help="the older encryption (3DES, SHA-1 MAC) that macOS Keychain and older Windows "
        "import; the default (AES-256, SHA-256) is for browsers, Linux and current Windows",
    )
    p.set_defaults(func=cmd_p12)

    p = sub.add_parser(
        "operator",
        allow_abbrev=False,
        parents=[common],
        help="run the Kubernetes operator (kopf)",
        description="Reconcile every DTRTrust into its bundle Secret, keep the agent DaemonSet "
        "in place, aggregate the nodes' reports into status, and serve /metrics. The same as "
        "`kopf run -m dtrtrust.operator` with the project's settings. Every option can also "
        "be set by the environment variable named in its help; the option wins.",
    )
    _settings(p, OPERATOR_SETTINGS)
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser(
        "agent",
        allow_abbrev=False,
        parents=[common],
        help="run the node agent (one per node, from the DaemonSet)",
        description="Watch the bundle Secrets and this node, write the trust files under the "
        "host root, and report per node in a DTRTrustNode. Runs until SIGTERM. Every option "
        "can also be set by the environment variable named in its help; the option wins.",
    )
    _settings(p, AGENT_SETTINGS)
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
    from dtrtrust.cli import logs

    daemon = args.command in ("operator", "agent")  # daemons say what they do
    logs.setup(
        getattr(args, "log_format", None) or "text",
        logging.DEBUG if debug else logging.INFO if args.verbose or daemon else logging.WARNING,
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
