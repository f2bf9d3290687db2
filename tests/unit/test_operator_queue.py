"""The operator's work queue, level-triggered: a DTRTrust event queues the trust only
for a new generation, ``concurrency`` workers reconcile queued trusts (never one trust
twice at once), and a temporary failure comes back after its backoff, without kopf's
retry bookkeeping on the object."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest
from test_operator_scale import ROOT, RecordingKube, put_trust, trust, world  # noqa: F401

from dtrtrust.core.network import FetchError
from dtrtrust.operator.controller import Controller, Result
from dtrtrust.operator.state import IndexedState


def test_a_trust_event_queues_the_trust_only_for_a_new_generation(
    world: tuple[Controller, IndexedState, RecordingKube],  # noqa: F811
) -> None:
    ctrl, _state, _kube = world
    ctrl.trust_changed("t", 1)  # new to this operator (start-up, or created)
    assert set(ctrl._dirty) == {"t"}
    assert ctrl._fresh == {"t"}, "a new spec re-checks the registry now"
    ctrl._dirty.clear()
    ctrl.trust_changed("t", 1)  # the event of our own status patch
    assert set(ctrl._dirty) == set()
    ctrl.trust_changed("t", 2)  # the spec changed
    assert set(ctrl._dirty) == {"t"}
    ctrl.forget("t")
    ctrl.trust_changed("t", 1)  # deleted and created again under the same name
    assert set(ctrl._dirty) == {"t"}


def test_workers_run_concurrency_trusts_at_once_and_never_one_trust_twice(
    world: tuple[Controller, IndexedState, RecordingKube],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctrl, _state, _kube = world
    ctrl = Controller(
        dataclasses.replace(ctrl.config, concurrency=3), ctrl.kube, ctrl.network, ctrl.state
    )
    guard = threading.Lock()
    running: dict[str, int] = {}
    peak = {"all": 0, "one": 0}
    done: list[str] = []

    def slow(name: str, fresh: bool = False) -> Result:
        with guard:
            running[name] = running.get(name, 0) + 1
            peak["all"] = max(peak["all"], sum(running.values()))
            peak["one"] = max(peak["one"], running[name])
        time.sleep(0.05)
        with guard:
            running[name] -= 1
            done.append(name)
        return Result("ready", "Ready")

    monkeypatch.setattr(ctrl, "_reconcile_sync", slow)

    async def scenario() -> None:
        workers = asyncio.create_task(ctrl.work_forever())
        ctrl.mark_dirty([f"t{i}" for i in range(9)])
        await asyncio.sleep(0.01)
        ctrl.mark_dirty(["t0"])  # queued again while a worker holds it
        for _ in range(200):
            if len(done) == 10:
                break
            await asyncio.sleep(0.01)
        workers.cancel()

    asyncio.run(scenario())
    assert sorted(done) == sorted([f"t{i}" for i in range(9)] + ["t0"])
    assert peak == {"all": 3, "one": 1}


def test_a_temporary_failure_is_queued_again_after_its_backoff(
    world: tuple[Controller, IndexedState, RecordingKube],  # noqa: F811
) -> None:
    ctrl, state, _kube = world
    ctrl = Controller(
        dataclasses.replace(ctrl.config, backoff_seconds=0.05), ctrl.kube, ctrl.network, state
    )
    put_trust(state, trust("r", ca={"fetch": {"pinnedSHA256": [ROOT.fingerprint]}}))
    ctrl.network.fetch_error = FetchError("FetchFailed", "connection refused")  # type: ignore[attr-defined]
    calls: list[bool] = []
    real = ctrl._reconcile_sync

    def counting(name: str, fresh: bool = False) -> Result:
        calls.append(fresh)
        if len(calls) == 3:  # the registry is back for the second retry
            ctrl.network.fetch_error = None  # type: ignore[attr-defined]
        return real(name, fresh)

    ctrl._reconcile_sync = counting  # type: ignore[method-assign]

    async def scenario() -> None:
        workers = asyncio.create_task(ctrl.work_forever())
        ctrl.trust_changed("r", 1)
        for _ in range(300):
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # a ready trust is not queued again
        workers.cancel()

    asyncio.run(scenario())
    assert calls == [True, True, True], "retries re-check the registry until it works"
    assert "r" not in ctrl._fresh
    assert ctrl.statuses["r"]["conditions"][-1]["status"] == "True"


def test_normal_events_beyond_the_budget_are_held_back_and_warnings_never(
    world: tuple[Controller, IndexedState, RecordingKube],  # noqa: F811
) -> None:
    import datetime as dt

    from dtrtrust.operator.controller import EventBudget

    ctrl, _state, kube = world
    clock = [0.0]
    ctrl.events = EventBudget(rate=2.0, burst=3, clock=lambda: clock[0])
    body = trust("t")
    now = dt.datetime.now(dt.UTC)
    for _ in range(5):
        ctrl._event(body, "Normal", "Published", "bundle", now=now)
    ctrl._event(body, "Warning", "FetchFailed", "refused", now=now)
    assert [w for w in kube.writes if w[0] == "event"] == [
        ("event", "Published"),
        ("event", "Published"),
        ("event", "Published"),
        ("event", "FetchFailed"),
    ]
    assert ctrl.events.suppressed == 2
    clock[0] = 1.0  # two more tokens
    kube.writes.clear()
    for _ in range(3):
        ctrl._event(body, "Normal", "Ready", "ready", now=now)
    assert kube.writes == [("event", "Ready"), ("event", "Ready")]


def test_the_operator_has_no_change_handlers_so_kopf_keeps_no_diff_base() -> None:
    """NoDiffBase is right only without create/update/resume/delete handlers: with one,
    kopf would see every event as a creation."""
    import kopf

    import dtrtrust.operator as wiring

    registry = kopf.get_default_registry()
    assert not registry._changing.get_all_handlers()
    assert "trust_event" in {str(h.id) for h in registry._watching.get_all_handlers()}
    essence = wiring.NoDiffBase().build(body=kopf.Body({"spec": {"a": 1}}))
    assert essence == {}
