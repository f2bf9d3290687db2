"""Kubernetes label syntax and nodeSelector semantics, one definition for the operator
(which nodes are desired) and the agent (does this trust select my node) (pure).

A nodeSelector is Kubernetes' equality selector: ``{"k": "v"}`` means label ``k``
equals ``v`` and ``{"k": ""}`` means label ``k`` equals the empty string (a node with
``k: something`` is not selected), exactly as a Pod's ``spec.nodeSelector``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dtrtrust.contract import DEFAULT_NODE_SELECTOR

# name part of a key, and a value: at most 63, alphanumeric at both ends, - _ . inside.
_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
# prefix of a key: a DNS subdomain (lowercase), at most 253.
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _PREFIX.match(prefix)):
        return (
            f"label key {key!r}: the prefix before '/' must be a lowercase DNS subdomain "
            "of at most 253 characters"
        )
    if not name or len(name) > 63 or not _NAME.match(name):
        return (
            f"label key {key!r}: the name must be 1-63 characters, alphanumeric at both "
            "ends, with only '-', '_' and '.' inside"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value (the empty string is valid), or None."""
    if value == "":
        return None
    if len(value) > 63 or not _NAME.match(value):
        return (
            f"label value {value!r}: must be empty or 1-63 characters, alphanumeric at "
            "both ends, with only '-', '_' and '.' inside"
        )
    return None


def selector_problem(selector: Mapping[str, str]) -> str | None:
    """The first problem of a nodeSelector's keys and values, or None."""
    for key, value in selector.items():
        problem = label_key_problem(key) or label_value_problem(value)
        if problem:
            return problem
    return None


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether ``selector`` (plus kubernetes.io/os=linux) selects a node with ``labels``:
    every key present with exactly that value, the empty value included."""
    wanted = {**DEFAULT_NODE_SELECTOR, **selector}
    return all(key in labels and labels[key] == value for key, value in wanted.items())
