"""The kopf operator: thin handlers around :class:`~dtrtrust.operator.controller.Controller`.

Run as ``dtrtrust operator`` or ``kopf run -m dtrtrust.operator``. Level-triggered:
a DTRTrust event with a new generation (or a trust new to this operator) queues the
trust, and ``concurrency`` workers call one idempotent :meth:`Controller.reconcile`;
a resync task started at start-up calls the same function for every DTRTrust
(refreshInterval is honoured by caching fetches and probes). No kopf change handlers
(create/update/resume) and no timers: those make kopf patch its bookkeeping into every
object on every change (one more write per change, and a copy of the spec in an
annotation capped at 256 KiB), and timers add a finalizer, which deadlocks GitOps
deletions when the operator is gone. Temporary failures are retried by the queue
with backoff.

The reconcile reads the cluster from kopf indexes (:mod:`dtrtrust.operator.state`): the
DTRTrusts, the Nodes' labels, the agents' reports and the Secrets and ConfigMaps of the
operator namespace, each kept by one watch. Report, Node and Secret events only queue
the trusts they concern (:meth:`Controller.mark_dirty`); one worker reconciles them.

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
from dtrtrust.kube.cluster import Kube, existing_secret, load_client, report_entries
from dtrtrust.operator import metrics
from dtrtrust.operator.config import Config
from dtrtrust.operator.controller import Controller
from dtrtrust.operator.state import IndexedState

log = logging.getLogger("dtrtrust.operator")


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base for an operator without change-detecting handlers: nothing
    built, nothing fetched, nothing stored on the objects. A test holds the operator to
    having no such handler (with one, this would make every event look like a
    creation)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


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
    **indices: Any,
) -> None:
    """``indices``: kopf passes every index as a keyword argument named after it."""
    config = Config.from_env()
    # Own prefix for kopf's bookkeeping annotations; never spec or labels (Argo CD sees no drift).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    # No change handlers (create/update/resume), so no diff base: kopf would otherwise
    # deep-copy every watched body on every event (a node report is ~110 KB with 1,000
    # trusts) to compute a diff nobody reads.
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"  # no handler requires it
    # Reconnect watches regularly so a silently dropped connection is noticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf would turn its own log lines into Events in the pod's namespace; the operator
    # posts its own, deliberate events (Published, failures) where RBAC allows.
    settings.posting.enabled = False
    # kopf logs every handler run at INFO ("Handler 'trust_event' succeeded"): 4,000
    # lines for 1,000 new trusts. Its warnings and errors still show; the operator logs
    # what it does itself.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Namespaced resources (Secrets, ConfigMaps, reports) only in our namespace, without
    # listing namespaces; cluster-scoped ones (DTRTrusts, Nodes) cluster-wide.
    settings.scanning.disabled = True
    # The indexes' initial lists, then the watches: no call without a deadline.
    settings.networking.request_timeout = config.api_read_timeout
    settings.networking.connect_timeout = config.api_connect_timeout

    kube = Kube(
        load_client(config.concurrency + 4),
        config.namespace,
        (config.api_connect_timeout, config.api_read_timeout),
    )
    state = IndexedState(
        trusts=indices["trust_index"],
        secrets=indices["secret_index"],
        config_maps=indices["config_map_index"],
        nodes=indices["node_index"],
        reports=indices["report_index"],
    )
    ctrl = Controller(config, kube, state=state)
    memo["controller"] = ctrl
    metrics.describe(lambda: ctrl.statuses)
    await asyncio.to_thread(ctrl.ensure_daemonset)
    metrics.serve(config.metrics_port)
    loop = asyncio.get_running_loop()
    memo["tasks"] = [loop.create_task(ctrl.resync_forever()), loop.create_task(ctrl.work_forever())]
    logger.info("dtrtrust operator: %s", dataclasses.asdict(config))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("tasks") or []:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.on.probe(id="resync", errors=kopf.ErrorsMode.PERMANENT)
def resync_progress(memo: kopf.Memo, **_: Any) -> str:
    """/healthz fails (HTTP 500) when no resync round completed for 3 resync periods,
    so a stuck reconcile gets the pod restarted instead of staying green."""
    problem = _controller(memo).progress_problem()
    if problem:
        raise kopf.PermanentError(problem)
    return "ok"


# --- indexes: what the reconcile reads (one watch each, no LIST inside a reconcile) ----
# Every index function and event handler is async: kopf runs sync ones in its thread
# pool, and these touch the controller's queue (a dict and an asyncio.Event), which
# only the event loop may touch. None of them does I/O.


@kopf.index(API_GROUP, VERSION, PLURAL)
async def trust_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    """name -> the DTRTrust as last watched, without managedFields and annotations (the
    reconcile reads neither)."""
    meta = {k: v for k, v in body.metadata.items() if k not in ("managedFields", "annotations")}
    return {
        name: {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": meta,
            "spec": body.get("spec") or {},
            "status": body.get("status") or {},
        }
    }


def _ours(namespace: str | None) -> bool:
    return namespace == os.environ.get("DTRTRUST_NAMESPACE", Config.namespace)


@kopf.index("v1", "secrets")
async def secret_index(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return {name: existing_secret(body)} if _ours(namespace) else None


@kopf.index("v1", "configmaps")
async def config_map_index(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return {name: dict(body.get("data") or {})} if _ours(namespace) else None


@kopf.index("v1", "nodes")
async def node_index(name: str, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    return {name: dict(labels)}


@kopf.index(API_GROUP, VERSION, NODE_REPORT_PLURAL)
async def report_index(namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> Any:
    """node -> NodeReport (per trust: (content hash, state, message) and the probe).
    Also the report's change trigger: the controller diffs it against the node's
    previous report and queues only the trusts whose entry or probe result changed (and
    shares the parsed report with us)."""
    if not _ours(namespace):
        return None
    ctrl = _running(memo)
    if ctrl is not None:
        report = ctrl.report_changed(body)
        node = str(
            (body.get("status") or {}).get("nodeName") or body.get("metadata", {}).get("name")
        )
        return {node: report}
    node, report = report_entries(body)
    return {node: report}


# --- the DTRTrusts themselves ------------------------------------------------------


@kopf.on.event(API_GROUP, VERSION, PLURAL)
async def trust_event(
    name: str, type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Queue the trust (a new generation or new to us); a deleted one is forgotten (no
    finalizer: its Secret goes by garbage collection, through its owner reference)."""
    ctrl = _running(memo)
    if ctrl is None:
        return
    if type == "DELETED":
        ctrl.forget(name)
        return
    generation = body.get("metadata", {}).get("generation")
    ctrl.trust_changed(name, int(generation) if generation is not None else None)


# --- events that queue trusts (coalesced; one worker reconciles them) -----------------


def _running(memo: kopf.Memo) -> Controller | None:
    ctrl = memo.get("controller")
    return ctrl if isinstance(ctrl, Controller) else None  # None: start-up not done


@kopf.on.event(API_GROUP, VERSION, NODE_REPORT_PLURAL)
async def node_report_deleted(
    body: kopf.Body, type: str | None, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A report went (its Node went): queue the trusts it named. Changes are queued by
    report_index, so NodesSynced and Ready follow within a second."""
    ctrl = _running(memo)
    if ctrl is not None and namespace == ctrl.config.namespace and type == "DELETED":
        ctrl.report_changed(body, deleted=True)


@kopf.on.event("v1", "nodes")
async def node_changed(
    name: str, labels: kopf.Labels, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    ctrl = _running(memo)
    if ctrl is not None:
        ctrl.node_changed(name, None if type == "DELETED" else dict(labels))


@kopf.on.event("v1", "secrets")
@kopf.on.event("v1", "configmaps")
async def source_changed(
    name: str, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """A bundle Secret deleted or edited is repaired at once; a source change is picked
    up at once."""
    ctrl = _running(memo)
    if ctrl is not None and namespace == ctrl.config.namespace:
        ctrl.secret_changed(name, dict(labels))


def operator_environment(args: argparse.Namespace, env: Any) -> None:
    """The flags win over the environment (argparse already took the environment as
    their defaults): Config.from_env then reads what the flags say."""
    env["DTRTRUST_NAMESPACE"] = str(args.namespace)
    env["DTRTRUST_METRICS_PORT"] = str(args.metrics_port)


def run(args: argparse.Namespace) -> int:
    """``dtrtrust operator``: kopf with the project's settings, all DTRTrusts. The
    command line has put every setting into the environment and set up logging
    (``--log-format``) for kopf's lines too."""
    operator_environment(args, os.environ)
    kopf.run(
        namespaces=[args.namespace],
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{int(args.metrics_port) + 1}/healthz",
    )
    return 0
