"""A stand-in for dtrtrust's own ``Network`` protocol (reconcile.Network) and its
``Sources``: for unit tests of the layers above the network. The real network code is
tested against local TLS servers, and everything end to end against the DTR-like registry."""

from __future__ import annotations

from dataclasses import dataclass, field

import certfactory
from dtrtrust.cli.apply import ManifestSources
from dtrtrust.core.network import FetchedCA, FetchError, VerifyError, VerifyResult


@dataclass
class StubNetwork:
    """Serves ``served`` at /ca (pin checks as the real fetch does) and answers the
    verification with ``verify_error`` or success."""

    served: certfactory.Issued
    fetch_error: FetchError | None = None
    verify_error: VerifyError | None = None
    verified: list[tuple[str, bytes, bool]] = field(default_factory=list)
    names: tuple[str, ...] = ()  # what the registry's certificate is valid for

    def fetch_ca(
        self, url: str, *, pins: tuple[str, ...], insecure_skip_pinning: bool
    ) -> FetchedCA:
        if self.fetch_error:
            raise self.fetch_error
        fp = self.served.fingerprint
        if pins and fp not in pins:
            raise FetchError("FingerprintMismatch", f"served {fp}")
        if not pins and not insecure_skip_pinning:
            raise FetchError("Unpinned", "no pin")
        return FetchedCA(
            url=url, pem=self.served.cert_pem, fingerprints=(fp,), pinned=bool(pins), accepted=(fp,)
        )

    def verify_registry(
        self,
        registry: str,
        ca_pem: bytes,
        client: tuple[bytes, bytes] | None,
        *,
        probe_client_auth: bool,
    ) -> VerifyResult:
        self.verified.append((registry, ca_pem, probe_client_auth))
        if self.verify_error:
            raise self.verify_error
        return VerifyResult(
            chain=("leaf",),
            authn_method="TLSClientCertificate" if probe_client_auth else None,
            names=self.names,
        )


# Sources held in memory are exactly what `dtrtrust apply` uses for manifests it read.
Sources = ManifestSources
