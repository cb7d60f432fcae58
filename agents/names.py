"""The names a user types for policies and algorithms, with no imports: the command
line builds its choices from here without loading numpy, torch or pydantic."""

from __future__ import annotations

REFERENCE_POLICIES = ("nop2p", "selfconsume", "rule", "voltvar")
"""Rule-based policies (agents.policies) that need no training."""

ALGORITHMS = ("consensus", "consensus-critic", "ippo", "mappo", "maddpg")
"""Learners (agents.learners), as ``algo.name`` and ``--algo`` spell them."""
