"""A residential low-voltage feeder with many customers: Dickert et al.'s LV grid.

Source: J. Dickert, M. Domagk, P. Schegner, "Benchmark low voltage distribution
networks based on cluster analysis of actual grid properties", IEEE PowerTech 2013,
as built by ``pandapower.networks.create_dickert_lv_network`` with
``feeders_range="long"``, ``linetype="cable"``, ``customer="multiple"``,
``case="average"``: a 20/0.4 kV 400 kVA transformer, one long cable feeder with
branches, 122 buses of which 120 carry a customer connection (each a house with
several households; the builder gives each 2.3 kW coincident design load).

Changes made here: buses are named "mv", "lv" (the transformer's 0.4 kV busbar) and
"n1".."n120" in the builder's order. With the design loads the lowest voltage is
0.882 pu, so this feeder is voltage-constrained at high demand and at high PV export.
"""

from __future__ import annotations

import pandapower as pp
import pandapower.networks as pn

BUSES = ["mv", "lv"] + [f"n{i}" for i in range(1, 121)]


def build_dickert_lv(slack_vm_pu: float = 1.0, with_base_loads: bool = False) -> pp.pandapowerNet:
    """The LV feeder; its design loads only when ``with_base_loads``."""
    net = pn.create_dickert_lv_network(
        feeders_range="long", linetype="cable", customer="multiple", case="average")
    net.name = "dickert_lv"
    if len(net.bus) != len(BUSES):
        raise RuntimeError(f"pandapower's Dickert LV network changed: {len(net.bus)} buses")
    net.bus["name"] = BUSES
    net.ext_grid["vm_pu"] = slack_vm_pu
    net.load["name"] = [f"base{net.bus.name.at[b]}" for b in net.load.bus]
    if not with_base_loads:
        net.load.drop(net.load.index, inplace=True)
    return net
