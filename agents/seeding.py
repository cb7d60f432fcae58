"""Named random streams spawned from the scenario seed.

Every random draw in peergrid comes from ``stream(seed, name)``: the same seed and
name always give the same generator, and streams with different names are
independent (``numpy.random.SeedSequence`` with the name's CRC-32 as spawn key), so
adding a new consumer of randomness never shifts the draws of an existing one.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str, *index: int) -> np.random.Generator:
    key = (zlib.crc32(name.encode()), *index)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
