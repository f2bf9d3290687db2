"""nodeSelector: Kubernetes label syntax and equality semantics, for operator and agent."""

from __future__ import annotations

import pytest

from dtrtrust.core.labels import label_key_problem, label_value_problem, selects
from dtrtrust.core.spec import MAX_INLINE_PEM, SpecError, parse_trust

LINUX = {"kubernetes.io/os": "linux"}


@pytest.mark.parametrize(
    "key",
    ["role", "node-role.kubernetes.io/worker", "a.b_c-d", "example.com/x", "A1"],
)
def test_valid_label_keys_pass(key: str) -> None:
    assert label_key_problem(key) is None


@pytest.mark.parametrize(
    "key",
    ["", "-role", "role-", "a b", "/role", "Example.com/x", "a/b/c", "x" * 64, "p/" + "y" * 64],
)
def test_invalid_label_keys_say_what_is_wrong(key: str) -> None:
    assert "label key" in (label_key_problem(key) or "")


@pytest.mark.parametrize(("value", "ok"), [("", True), ("v1.2_x-y", True), ("-v", False)])
def test_label_values_may_be_empty_but_otherwise_follow_the_name_syntax(
    value: str, ok: bool
) -> None:
    assert (label_value_problem(value) is None) is ok


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"gpu": ""}, {**LINUX, "gpu": ""}, True),
        ({"gpu": ""}, {**LINUX, "gpu": "yes"}, False),  # "" means equals empty, not exists
        ({"gpu": ""}, LINUX, False),
    ],
)
def test_an_empty_selector_value_means_equals_empty(
    selector: dict[str, str], labels: dict[str, str], expected: bool
) -> None:
    assert selects(selector, labels) is expected


def _trust(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": "dtr"},
        "spec": {"registry": "dtr.example.com", "ca": {"pem": "x"}, **spec},
    }


def test_the_spec_rejects_a_selector_key_that_is_not_label_syntax() -> None:
    with pytest.raises(SpecError, match="label key 'bad key'"):
        parse_trust(_trust(nodeSelector={"bad key": "x"}))


def test_inline_pem_over_the_limit_says_use_config_map_refs() -> None:
    with pytest.raises(SpecError, match="use configMapRefs for large bundles"):
        parse_trust(_trust(ca={"pem": "x" * (MAX_INLINE_PEM + 1)}))
