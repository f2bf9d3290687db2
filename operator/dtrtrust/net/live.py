"""The real network, as the reconcile sees it (:class:`dtrtrust.core.network.Network`)."""

from __future__ import annotations

from dataclasses import dataclass

from dtrtrust.core.network import FetchedCA, VerifyResult
from dtrtrust.net import fetch, verify


@dataclass(frozen=True)
class LiveNetwork:
    """The real network, with the timeout the front end configured."""

    timeout: float = 10.0

    def fetch_ca(
        self, url: str, *, pins: tuple[str, ...], insecure_skip_pinning: bool
    ) -> FetchedCA:
        return fetch.fetch_ca(
            url, pins=pins, insecure_skip_pinning=insecure_skip_pinning, timeout=self.timeout
        )

    def verify_registry(
        self,
        registry: str,
        ca_pem: bytes,
        client: tuple[bytes, bytes] | None,
        *,
        probe_client_auth: bool,
    ) -> VerifyResult:
        return verify.verify_registry(
            registry, ca_pem, client, probe_client_auth=probe_client_auth, timeout=self.timeout
        )
