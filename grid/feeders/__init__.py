"""Feeder builders. Each returns a pandapower network whose bus names are stable ids."""

from __future__ import annotations

from collections.abc import Callable

import pandapower as pp

from peergrid.grid.feeders import ieee13
from peergrid.grid.feeders.ieee13 import build_ieee13

FEEDERS: dict[str, Callable[..., pp.pandapowerNet]] = {"ieee13": build_ieee13}

# Bus names per feeder, known without building the network (for scenario validation).
FEEDER_BUSES: dict[str, list[str]] = {"ieee13": list(ieee13.BUSES)}
