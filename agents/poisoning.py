"""A lying neighbour: an insider that takes part in consensus with forged parameters.

What the poisoning experiment (``peergrid experiment poisoning``) trains against. The
liar learns like everyone else (its own critic, its own actor), but every vector it
sends its neighbours is forged, one of:

- ``scaled``: its true vector times ``scale`` (100: large but finite, so a wire check
  on magnitudes alone does not catch it);
- ``random``: independent N(0, ``random_std``²) values, fresh every step;
- ``sign-flip``: its true vector negated (the same norm as an honest one).

Random draws come from the stream the caller passes (the scenario seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ATTACKS = ("scaled", "random", "sign-flip")


@dataclass(frozen=True)
class Attack:
    agent: str
    kind: str
    scale: float = 100.0
    random_std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"attack = {self.kind!r}: choose from {', '.join(ATTACKS)}")


class Liar:
    """Forges what ``attack.agent`` sends, with its own random stream."""

    def __init__(self, attack: Attack, rng: np.random.Generator) -> None:
        self.attack, self.rng = attack, rng

    @property
    def agent(self) -> str:
        return self.attack.agent

    def forge(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float64)
        if self.attack.kind == "scaled":
            return v * self.attack.scale
        if self.attack.kind == "random":
            return self.rng.normal(0.0, self.attack.random_std, size=v.shape)
        return -v
