"""Baran & Wu 33-bus feeder (12.66 kV), pandapower's built-in ``case33bw``.

Source: M. E. Baran and F. F. Wu, "Network reconfiguration in distribution systems
for loss reduction and load balancing", IEEE Trans. Power Delivery 4(2), 1989; data
as shipped by pandapower (from MATPOWER's case33bw). At its base load (3.715 MW,
2.3 Mvar) the lowest voltage is 0.913 pu at bus 18, the end of the main feeder.

Changes made here: buses are named "1".."33" as in the paper (bus 1 is the
substation); the 10 MVA base and all impedances are untouched. The case ships no
line ratings (``max_i_ka`` = 99999), so line loading on this feeder is reported but
always near 0 %; the five normally-open tie lines of the paper are not in the case.
"""

from __future__ import annotations

import pandapower as pp
import pandapower.networks as pn

BUSES = [str(i) for i in range(1, 34)]


def build_case33bw(slack_vm_pu: float = 1.0, with_base_loads: bool = False) -> pp.pandapowerNet:
    """The Baran-Wu feeder; its 32 base loads only when ``with_base_loads``."""
    net = pn.case33bw()
    net.name = "case33bw"
    net.bus["name"] = [str(i + 1) for i in net.bus.index]
    net.ext_grid["vm_pu"] = slack_vm_pu
    net.load["name"] = [f"base{net.bus.name.at[b]}" for b in net.load.bus]
    if not with_base_loads:
        net.load.drop(net.load.index, inplace=True)
    return net


def base_loads_kw_kvar() -> dict[str, tuple[float, float]]:
    """The published load per bus (kW, kvar)."""
    net = build_case33bw(with_base_loads=True)
    return {str(net.bus.name.at[r.bus]): (r.p_mw * 1000.0, r.q_mvar * 1000.0)
            for r in net.load.itertuples()}
