"""An unreachable API server makes the operator retry; it never crashes its loops."""

from __future__ import annotations

import asyncio
import socket

import pytest
from kubernetes import client

from dtrtrust.kube.cluster import ApiUnavailable, Kube
from dtrtrust.operator.config import Config
from dtrtrust.operator.controller import Controller


def unreachable_kube() -> Kube:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"https://127.0.0.1:{port}"
    cfg.verify_ssl = False
    cfg.retries = 0
    return Kube(client.ApiClient(cfg), "dtrtrust-system")


def test_an_unreachable_api_server_is_api_unavailable_not_a_transport_exception() -> None:
    with pytest.raises(ApiUnavailable, match="unreachable"):
        unreachable_kube().get_trust("dtr")


def test_reconcile_during_an_api_outage_is_a_temporary_result() -> None:
    ctrl = Controller(Config(backoff_seconds=1, max_backoff_seconds=4), unreachable_kube())
    result = asyncio.run(ctrl.reconcile("dtr"))
    assert result.kind == "temporary"
    assert [ctrl.backoff("dtr")] == [2.0]  # one failure so far: doubled once


def test_a_resync_round_during_an_api_outage_returns_instead_of_raising() -> None:
    ctrl = Controller(Config(), unreachable_kube())
    asyncio.run(ctrl.resync_once())
