"""The kopf operator: thin handlers around :class:`~dtrtrust.operator.controller.Controller`.

Run as ``dtrtrust operator`` or ``kopf run -m dtrtrust.operator``. create, update and
resume call one idempotent :meth:`Controller.reconcile`; a resync task started at
start-up calls the same function for every DTRTrust (refreshInterval is honoured by
caching fetches and probes), instead of kopf timers, because kopf adds a finalizer
for timers and a finalizer deadlocks GitOps deletions when the operator is gone.

This module is only the kopf wiring; the package holds the controller, its config, the
objects it writes, the agent DaemonSet and the metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
from typing import Any

import kopf

from dtrtrust.contract import API_GROUP, NODE_REPORT_PLURAL, PLURAL, VERSION
from dtrtrust.kube.cluster import Kube, load_client
from dtrtrust.operator import metrics
from dtrtrust.operator.config import Config
from dtrtrust.operator.controller import Controller

log = logging.getLogger("dtrtrust.operator")


def _controller(memo: kopf.Memo) -> Controller:
    ctrl = memo.get("controller")
    if not isinstance(ctrl, Controller):
        raise kopf.PermanentError("the operator did not start up properly")
    return ctrl


@kopf.on.startup()
async def startup(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    config = Config.from_env()
    # Own prefix for kopf's bookkeeping annotations; never spec or labels (Argo CD sees no drift).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"  # no handler requires it
    # Reconnect watches regularly so a silently dropped connection is noticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf would turn its own log lines into Events in the pod's namespace; the operator
    # posts its own, deliberate events (Published, failures) where RBAC allows.
    settings.posting.enabled = False
    settings.execution.max_workers = 4

    kube = Kube(load_client(), config.namespace)
    ctrl = Controller(config, kube)
    memo["controller"] = ctrl
    await asyncio.to_thread(ctrl.ensure_daemonset)
    metrics.serve(config.metrics_port)
    memo["resync"] = asyncio.get_running_loop().create_task(ctrl.resync_forever())
    logger.info("dtrtrust operator: %s", dataclasses.asdict(config))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync")
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.on.resume(API_GROUP, VERSION, PLURAL)
@kopf.on.create(API_GROUP, VERSION, PLURAL)
@kopf.on.update(API_GROUP, VERSION, PLURAL)
async def reconcile_trust(name: str, memo: kopf.Memo, **_: Any) -> None:
    ctrl = _controller(memo)
    result = await ctrl.reconcile(name, fresh=True)
    if result.kind == "temporary":
        raise kopf.TemporaryError(result.message, delay=ctrl.backoff(name))
    if result.kind == "permanent":
        raise kopf.PermanentError(result.message)


@kopf.on.delete(API_GROUP, VERSION, PLURAL, optional=True)
async def forget_trust(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Optional: no finalizer. The Secret goes by garbage collection (owner reference)."""
    _controller(memo).forget(name)


@kopf.on.event(API_GROUP, VERSION, NODE_REPORT_PLURAL)
async def node_report_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An agent's report changed: reconcile the trusts it names, so NodesSynced and
    Ready follow within a second instead of at the next resync."""
    ctrl = memo.get("controller")
    if not isinstance(ctrl, Controller):
        return  # an event before start-up finished; the resync covers it
    if (body.get("metadata") or {}).get("namespace") != ctrl.config.namespace:
        return  # only our agents report, in our namespace
    names = {str(t.get("name")) for t in (body.get("status") or {}).get("trusts") or []}
    for name in sorted(n for n in names if n and n != "None"):
        await ctrl.reconcile(name)


def run(args: argparse.Namespace) -> int:
    """``dtrtrust operator``: kopf with the project's settings, all DTRTrusts. The
    command line has put every setting into the environment and set up logging
    (``--log-format``) for kopf's lines too."""
    os.environ.setdefault("DTRTRUST_NAMESPACE", args.namespace)
    os.environ.setdefault("DTRTRUST_METRICS_PORT", str(args.metrics_port))
    kopf.run(
        clusterwide=True,
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{int(args.metrics_port) + 1}/healthz",
    )
    return 0
