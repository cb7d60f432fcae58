"""Shared fixtures and hypothesis profiles.

Profiles: ``dev`` (default, quick) and ``ci`` (selected when CI=true). Market
invariants pin their own example counts (>= 1,000) so both profiles meet the issue.
"""

from __future__ import annotations

import copy
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def _ieee13_scenario():
    from peergrid.scenarios.definition.loader import load_scenario

    return load_scenario("ieee13")


@pytest.fixture()
def ieee13_scenario(_ieee13_scenario):
    """The default scenario (session-loaded, deep-copied per test)."""
    return copy.deepcopy(_ieee13_scenario)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Learners run single-threaded, as every training and node process does: on this
    2-core machine two intra-op threads made tiny networks 10-20 x slower."""
    import torch

    torch.set_num_threads(1)
