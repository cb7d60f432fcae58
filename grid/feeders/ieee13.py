"""IEEE 13-node test feeder as a balanced positive-sequence equivalent in pandapower.

Source data: IEEE PES Distribution System Analysis Subcommittee, *IEEE 13 Node Test
Feeder* (Kersting, 2001): line configurations 601-607 (phase impedance matrices in
ohm/mile after Kron reduction, shunt susceptance in µS/mile), segment lengths, spot
loads, capacitors and the 633-634 transformer XFM-1. Line ampacities are the
conductor ratings of the same document.

Simplifications (the feeder is unbalanced; peergrid's market and agents are not):
1. Every segment is modelled as three-phase with positive-sequence impedance
   Z1 = mean(self) − mean(mutual) of its phase matrix, and B1 likewise. For the
   one-phase laterals (605, 607) Z1 is the self impedance; a balanced lateral then
   carries a third of the per-phase current the real one does, so its voltage drop is
   understated.
2. The regulator between 650 and 632 is not modelled as a device: the slack bus 650
   holds the regulator's output voltage ``slack_vm_pu`` (a fixed tap). The substation
   transformer is omitted, as in the published test case (650 is the 1.0 pu source).
3. All loads are constant-power and three-phase; the distributed load on 632-671 is
   lumped at a node 670 one third of the way along (the convention of the OpenDSS
   model), so the feeder has 14 buses.
4. The switch 671-692 is closed; capacitors are constant-impedance shunts.

The spot loads of the test case are returned in ``net.load`` only when
``with_spot_loads`` is set (used to check the equivalent against published
voltages). In a market scenario the agents *are* those loads.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: the per-phase model needs no pandapower
    import pandapower as pp

FT_PER_MILE = 5280.0
KM_PER_MILE = 1.609344
F_HZ = 60.0

# Lower triangles of the phase impedance matrices (ohm/mile) and shunt susceptance
# matrices (µS/mile), IEEE 13 Node Test Feeder, "Impedances" section.
_Z_OHM_PER_MILE: dict[str, list[list[complex]]] = {
    "601": [[0.3465 + 1.0179j], [0.1560 + 0.5017j, 0.3375 + 1.0478j],
            [0.1580 + 0.4236j, 0.1535 + 0.3849j, 0.3414 + 1.0348j]],
    "602": [[0.7526 + 1.1814j], [0.1580 + 0.4236j, 0.7475 + 1.1983j],
            [0.1560 + 0.5017j, 0.1535 + 0.3849j, 0.7436 + 1.2112j]],
    "603": [[1.3294 + 1.3471j], [0.2066 + 0.4591j, 1.3238 + 1.3569j]],
    "604": [[1.3238 + 1.3569j], [0.2066 + 0.4591j, 1.3294 + 1.3471j]],
    "605": [[1.3292 + 1.3475j]],
    "606": [[0.7982 + 0.4463j], [0.3192 + 0.0328j, 0.7891 + 0.4041j],
            [0.2849 - 0.0143j, 0.3192 + 0.0328j, 0.7982 + 0.4463j]],
    "607": [[1.3425 + 0.5124j]],
}
_B_US_PER_MILE: dict[str, list[list[float]]] = {
    "601": [[6.2998], [-1.9958, 5.9597], [-1.2595, -0.7417, 5.6386]],
    "602": [[5.6990], [-1.0817, 5.1795], [-1.6905, -0.6588, 5.4246]],
    "603": [[4.7097], [-0.8999, 4.6658]],
    "604": [[4.6658], [-0.8999, 4.7097]],
    "605": [[4.5193]],
    "606": [[96.8897], [0.0, 96.8897], [0.0, 0.0, 96.8897]],
    "607": [[88.9912]],
}
# Phases of each configuration, in the order of its matrix rows (IEEE 13 "Overhead /
# Underground Line Configurations"): 603 is B-C, 604 A-C, 605 C, 607 A.
LINE_PHASES = {"601": "abc", "602": "abc", "603": "bc", "604": "ac", "605": "c",
               "606": "abc", "607": "a"}
# Phase conductor ampacity (A): 556.5 kcmil 26/7 ACSR, 4/0 6/1 ACSR, 1/0 ACSR,
# 250 kcmil AA concentric-neutral cable, 1/0 AA tape-shielded cable.
_AMPACITY_A = {"601": 730, "602": 340, "603": 230, "604": 230, "605": 230,
               "606": 329, "607": 202}

# (from, to, length ft, configuration)
SEGMENTS: list[tuple[str, str, float, str]] = [
    ("650", "632", 2000, "601"),
    ("632", "670", 667, "601"),
    ("670", "671", 1333, "601"),
    ("632", "633", 500, "602"),
    ("632", "645", 500, "603"),
    ("645", "646", 300, "603"),
    ("671", "680", 1000, "601"),
    ("671", "684", 300, "604"),
    ("684", "611", 300, "605"),
    ("684", "652", 800, "607"),
    ("692", "675", 500, "606"),
]
# Three-phase totals of the spot loads (kW, kvar); 670 is the lumped distributed load.
SPOT_LOADS_KW_KVAR: dict[str, tuple[float, float]] = {
    "634": (400, 290), "645": (170, 125), "646": (230, 132), "652": (128, 86),
    "670": (200, 116), "671": (1155, 660), "675": (843, 462), "692": (170, 151),
    "611": (170, 80),
}
CAPACITORS_KVAR = {"675": 600, "611": 100}
BUSES = ["650", "632", "633", "634", "645", "646", "670", "671", "680", "684",
         "611", "652", "692", "675"]
BUS_KV = {b: (0.48 if b == "634" else 4.16) for b in BUSES}
XFM1_KVA = 500.0
# Spot loads per phase as published: bus -> (connection, model, {phase(s): (kW, kvar)});
# "ab" is the delta branch a-b. The distributed load of 632-671 is lumped at 670.
SPOT_LOADS_PER_PHASE: dict[str, tuple[str, str, dict[str, tuple[float, float]]]] = {
    "634": ("Y", "PQ", {"a": (160, 110), "b": (120, 90), "c": (120, 90)}),
    "645": ("Y", "PQ", {"b": (170, 125)}),
    "646": ("D", "Z", {"bc": (230, 132)}),
    "652": ("Y", "Z", {"a": (128, 86)}),
    "671": ("D", "PQ", {"ab": (385, 220), "bc": (385, 220), "ca": (385, 220)}),
    "675": ("Y", "PQ", {"a": (485, 190), "b": (68, 60), "c": (290, 212)}),
    "692": ("D", "I", {"ca": (170, 151)}),
    "611": ("Y", "I", {"c": (170, 80)}),
    "670": ("Y", "PQ", {"a": (17, 10), "b": (66, 38), "c": (117, 68)}),
}
CAPACITORS_KVAR_PER_PHASE = {"675.a": 200, "675.b": 200, "675.c": 200, "611.c": 100}
# Published node voltages (pu, phases A/B/C) of the unbalanced test case with
# regulator taps 10/8/11 (output 1.0625/1.0500/1.06875 pu); "-" phases omitted.
PUBLISHED_VM_PU: dict[str, tuple[float, ...]] = {
    "632": (1.0210, 1.0420, 1.0174), "633": (1.0180, 1.0401, 1.0148),
    "634": (0.9940, 1.0218, 0.9960), "645": (1.0329, 1.0155),
    "646": (1.0311, 1.0134), "671": (0.9900, 1.0529, 0.9778),
    "680": (0.9900, 1.0529, 0.9778), "684": (0.9881, 0.9758), "611": (0.9738,),
    "652": (0.9825,), "692": (0.9900, 1.0529, 0.9777), "675": (0.9835, 1.0553, 0.9758),
}
PUBLISHED_REGULATOR_VM_PU = (1.0625, 1.0500, 1.06875)


def positive_sequence(config: str) -> tuple[complex, float]:
    """(Z1 ohm/mile, B1 µS/mile) of a line configuration: mean self − mean mutual."""
    z = _Z_OHM_PER_MILE[config]
    b = _B_US_PER_MILE[config]
    n = len(z)
    z_self = np.mean([z[i][i] for i in range(n)])
    b_self = np.mean([b[i][i] for i in range(n)])
    if n == 1:
        return complex(z_self), float(b_self)
    z_mut = np.mean([z[i][j] for i in range(n) for j in range(i)])
    b_mut = np.mean([b[i][j] for i in range(n) for j in range(i)])
    return complex(z_self - z_mut), float(b_self - b_mut)


def build_ieee13(
    slack_vm_pu: float = 1.0,
    with_spot_loads: bool = False,
    with_capacitors: bool = True,
) -> pp.pandapowerNet:
    """Build the balanced IEEE 13-node equivalent; bus names are the IEEE node ids."""
    import pandapower as pp

    net = pp.create_empty_network(name="ieee13", f_hz=F_HZ, sn_mva=1.0)
    bus = {b: pp.create_bus(net, vn_kv=BUS_KV[b], name=b) for b in BUSES}
    pp.create_ext_grid(net, bus["650"], vm_pu=slack_vm_pu, va_degree=0.0, name="regulator")
    for frm, to, length_ft, config in SEGMENTS:
        z1, b1 = positive_sequence(config)
        pp.create_line_from_parameters(
            net, bus[frm], bus[to],
            length_km=length_ft / FT_PER_MILE * KM_PER_MILE,
            r_ohm_per_km=z1.real / KM_PER_MILE,
            x_ohm_per_km=z1.imag / KM_PER_MILE,
            c_nf_per_km=b1 / KM_PER_MILE / (2 * math.pi * F_HZ) * 1e3,
            max_i_ka=_AMPACITY_A[config] / 1000.0,
            name=f"{frm}-{to}", type="cs" if config in ("606", "607") else "ol",
        )
    # XFM-1: 500 kVA, 4.16 kV Gr.Y / 0.48 kV Gr.Y, R = 1.1 %, X = 2 %.
    pp.create_transformer_from_parameters(
        net, bus["633"], bus["634"], sn_mva=XFM1_KVA / 1000.0, vn_hv_kv=4.16, vn_lv_kv=0.48,
        vkr_percent=1.1, vk_percent=math.hypot(1.1, 2.0), pfe_kw=0.0, i0_percent=0.0,
        name="XFM-1",
    )
    pp.create_switch(net, bus["671"], bus["692"], et="b", closed=True, name="671-692")
    if with_capacitors:
        for b, kvar in CAPACITORS_KVAR.items():
            pp.create_shunt(net, bus[b], q_mvar=-kvar / 1000.0, name=f"cap{b}")
    if with_spot_loads:
        for b, (kw, kvar) in SPOT_LOADS_KW_KVAR.items():
            pp.create_load(net, bus[b], p_mw=kw / 1000.0, q_mvar=kvar / 1000.0, name=f"spot{b}")
    return net


def phase_matrices(config: str) -> tuple[np.ndarray, np.ndarray]:
    """(Z ohm/mile, B µS/mile) of a configuration as full symmetric matrices over its
    phases (``LINE_PHASES``)."""
    z_low, b_low = _Z_OHM_PER_MILE[config], _B_US_PER_MILE[config]
    n = len(z_low)
    z = np.zeros((n, n), dtype=complex)
    b = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            z[i, j] = z[j, i] = z_low[i][j]
            b[i, j] = b[j, i] = b_low[i][j]
    return z, b


def _transposed(m: np.ndarray) -> np.ndarray:
    """The 3 x 3 matrix of a transposed line: mean self on the diagonal, mean mutual off it
    (for a one-phase configuration the mutual is 0: its phases are uncoupled)."""
    n = m.shape[0]
    self_ = np.mean(np.diag(m))
    mutual = (m.sum() - np.trace(m)) / (n * (n - 1)) if n > 1 else 0.0
    return np.full((3, 3), mutual) + np.eye(3) * (self_ - mutual)


def phase_feeder(lines: str = "kersting", with_capacitors: bool = False,
                 base_mva: float = 1.0):
    """The IEEE 13-node feeder per phase (``grid.threephase``).

    ``lines = "kersting"``: the published phase impedance matrices, one- and two-phase
    laterals as they are (the test feeder itself). ``lines = "sequence"``: every segment
    as a transposed three-phase line with its configuration's sequence impedances, i.e.
    what pandapower's three-phase power flow can represent; used to check the solver
    against ``pandapower.runpp_3ph``.
    """
    from peergrid.grid.threephase import PhaseBranch, PhaseFeeder, line_impedance_pu

    if lines not in ("kersting", "sequence"):
        raise ValueError(f"lines = {lines!r}: 'kersting' or 'sequence'")
    phases_of = {c: (LINE_PHASES[c] if lines == "kersting" else "abc") for c in LINE_PHASES}
    bus_phases = {b: "" for b in BUSES}
    for frm, to, _, config in SEGMENTS:
        for b in (frm, to):
            bus_phases[b] = "".join(p for p in "abc" if p in bus_phases[b] + phases_of[config])
    bus_phases["634"] = bus_phases["633"]  # through XFM-1
    bus_phases["692"] = bus_phases["671"]  # through the switch
    branches = []
    for frm, to, length_ft, config in SEGMENTS:
        z, b = phase_matrices(config)
        if lines == "sequence":
            z, b = _transposed(z), _transposed(b)
        miles = length_ft / FT_PER_MILE
        z_pu, y_pu = line_impedance_pu(z * miles, b * miles * 1e-6, BUS_KV[frm], base_mva)
        branches.append(PhaseBranch(f"{frm}-{to}", frm, to, phases_of[config], z_pu, y_pu,
                                    _AMPACITY_A[config] / 1000.0))
    # XFM-1: 500 kVA, Gr.Y-Gr.Y, R = 1.1 %, X = 2 % on its rating, per phase; rated
    # current on the 4.16 kV side 500 / (sqrt(3) x 4.16) = 69.4 A
    z_trafo = (0.011 + 0.02j) * base_mva / 0.5
    trafo = PhaseBranch("XFM-1", "633", "634", "abc", np.eye(3) * z_trafo,
                        np.zeros((3, 3), dtype=complex),
                        XFM1_KVA / (math.sqrt(3) * BUS_KV["633"]) / 1000.0)
    shunts = {}
    if with_capacitors:
        shunts = {node: 1j * kvar / 1000.0 / (base_mva / 3.0)
                  for node, kvar in CAPACITORS_KVAR_PER_PHASE.items()}
    return PhaseFeeder("ieee13", dict(BUS_KV), bus_phases, "650", branches, [trafo],
                       [("671", "692")], shunts, base_mva)


def build_ieee13_sequence(slack_vm_pu: float = 1.0) -> pp.pandapowerNet:
    """``phase_feeder("sequence")`` as a pandapower network for ``runpp_3ph``: every
    segment three-phase with positive- and zero-sequence impedances, XFM-1 YNyn, a stiff
    source (the regulator's output), no loads (``PandapowerPhaseSolver`` adds them)."""
    import pandapower as pp

    net = pp.create_empty_network(name="ieee13_sequence", f_hz=F_HZ, sn_mva=1.0)
    bus = {b: pp.create_bus(net, vn_kv=BUS_KV[b], name=b) for b in BUSES}
    pp.create_ext_grid(net, bus["650"], vm_pu=slack_vm_pu, va_degree=0.0, name="regulator",
                       s_sc_max_mva=1e9, rx_max=0.1, x0x_max=1.0, r0x0_max=0.1)
    omega = 2 * math.pi * F_HZ
    for frm, to, length_ft, config in SEGMENTS:
        z, b = (_transposed(m) for m in phase_matrices(config))
        z1, z0 = z[0, 0] - z[0, 1], z[0, 0] + 2 * z[0, 1]
        b1, b0 = b[0, 0] - b[0, 1], b[0, 0] + 2 * b[0, 1]
        pp.create_line_from_parameters(
            net, bus[frm], bus[to], length_km=length_ft / FT_PER_MILE * KM_PER_MILE,
            r_ohm_per_km=z1.real / KM_PER_MILE, x_ohm_per_km=z1.imag / KM_PER_MILE,
            c_nf_per_km=b1 / KM_PER_MILE / omega * 1e3,
            r0_ohm_per_km=z0.real / KM_PER_MILE, x0_ohm_per_km=z0.imag / KM_PER_MILE,
            c0_nf_per_km=b0 / KM_PER_MILE / omega * 1e3,
            max_i_ka=_AMPACITY_A[config] / 1000.0, name=f"{frm}-{to}")
    vk = math.hypot(1.1, 2.0)
    pp.create_transformer_from_parameters(
        net, bus["633"], bus["634"], sn_mva=XFM1_KVA / 1000.0, vn_hv_kv=4.16, vn_lv_kv=0.48,
        vkr_percent=1.1, vk_percent=vk, pfe_kw=0.0, i0_percent=0.0, vector_group="YNyn",
        vk0_percent=vk, vkr0_percent=1.1, mag0_percent=1e12, mag0_rx=0.0,
        si0_hv_partial=0.9, name="XFM-1")
    pp.create_switch(net, bus["671"], bus["692"], et="b", closed=True, name="671-692")
    return net


def published_spot_loads():
    """The test case's spot loads as ``grid.threephase.SpotLoad`` (for the published
    per-phase voltages)."""
    from peergrid.grid.threephase import SpotLoad

    return [SpotLoad(bus, phases, conn, model, kw, kvar)
            for bus, (conn, model, loads) in SPOT_LOADS_PER_PHASE.items()
            for phases, (kw, kvar) in loads.items()]
