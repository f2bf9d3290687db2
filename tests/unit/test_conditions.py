"""Conditions: Ready follows the first failure; lastTransitionTime moves only on a transition."""

from __future__ import annotations

import datetime as dt

from dtrtrust.core import conditions as c

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)


def test_ready_is_true_only_when_every_condition_is_true() -> None:
    conds = [c.ok(c.CA_AVAILABLE, "Resolved", ""), c.ok(c.BUNDLE_VALID, "Valid", "")]
    assert c.ready(conds).status == c.TRUE


def test_ready_carries_the_first_failing_reason_in_contract_order() -> None:
    conds = [
        c.failed(c.NODES_SYNCED, "NodeErrors", "n1 failed"),
        c.failed(c.CA_AVAILABLE, "FingerprintMismatch", "pin differs"),
    ]
    ready = c.ready(conds)
    assert (ready.status, ready.reason) == (c.FALSE, "FingerprintMismatch")
    assert "CAAvailable" in ready.message


def test_last_transition_time_is_kept_while_status_is_unchanged() -> None:
    first = c.merge(None, [c.ok(c.BUNDLE_VALID, "Valid", "2 certs")], generation=1, now=T0)
    again = c.merge(
        [x.to_dict() for x in first],
        [c.ok(c.BUNDLE_VALID, "Valid", "3 certs")],
        generation=2,
        now=T1,
    )
    assert again[0].last_transition_time == "2030-01-01T00:00:00Z"
    assert again[0].observed_generation == 2
    assert again[0].message == "3 certs"


def test_last_transition_time_moves_when_status_changes() -> None:
    first = c.merge(None, [c.ok(c.BUNDLE_VALID, "Valid", "")], generation=1, now=T0)
    changed = c.merge(
        [x.to_dict() for x in first],
        [c.failed(c.BUNDLE_VALID, "Expired", "")],
        generation=1,
        now=T1,
    )
    assert changed[0].last_transition_time == "2030-01-01T01:00:00Z"


def test_merge_orders_conditions_as_the_contract_lists_them() -> None:
    merged = c.merge(
        None,
        [c.ok(c.READY, "Ready", ""), c.ok(c.CA_AVAILABLE, "Resolved", "")],
        generation=1,
        now=T0,
    )
    assert [x.type for x in merged] == [c.CA_AVAILABLE, c.READY]
