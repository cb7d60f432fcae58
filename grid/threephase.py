"""A feeder per phase: one node per (bus, phase), and the batched Z-bus solver on it.

The balanced equivalent of an unbalanced feeder hides what matters at its edges: a
one-phase lateral carries three times the per-phase current of its balanced stand-in,
and the mutual coupling of untransposed lines lifts a lightly loaded phase while the
others sag (phase B above 1.05 pu at 671-692 in the published IEEE 13 case). Here a
feeder is described phase by phase:

* a node is ``"<bus>.<phase>"`` for each phase a bus has (``"611.c"``);
* a line joins the same phases at both ends with its series impedance matrix and its
  shunt admittance matrix (pi model, half at each end), both in per unit, and a
  per-conductor ampacity;
* a transformer (wye-grounded on both sides) is a per-phase series impedance;
* a closed bus-bus switch fuses the phases of its two buses;
* the slack bus holds three phase voltages (a fixed-tap regulator's output).

Per unit: the three-phase base ``base_mva`` and each bus's line-to-line kV give
Z_base = kV² / MVA; a node's power is in units of base_mva / 3 (one phase's share).
Loads are wye-connected constant power per node (what the agents are), solved by the
same ``ZBusIteration`` as the balanced feeders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from peergrid.grid.powerflow import FeederTopology, PowerFlowResult
from peergrid.grid.zbus import BatchResult, ZBusIteration, checked_batch, single_column

PHASES = "abc"
_ROTATE = {p: np.exp(-2j * math.pi / 3 * i) for i, p in enumerate(PHASES)}


@dataclass(frozen=True)
class PhaseBranch:
    """A line or transformer between the same phases of two buses."""

    name: str
    from_bus: str
    to_bus: str
    phases: str
    z_pu: np.ndarray
    """(n, n) series impedance of the whole branch, per unit."""
    y_shunt_pu: np.ndarray
    """(n, n) total shunt admittance (half at each end), per unit."""
    i_max_ka: float = math.inf
    """Ampacity of each phase conductor."""

    def y_primitive(self) -> np.ndarray:
        """(2n, 2n) admittance of the pi model between (from phases, to phases): the
        currents flowing into the branch at both ends are y_primitive @ (V_from, V_to)."""
        y = np.linalg.inv(self.z_pu)
        half = self.y_shunt_pu / 2
        return np.block([[y + half, -y], [-y, y + half]])


@dataclass(frozen=True)
class PhaseFeeder:
    """Everything a per-phase power flow needs, in per unit."""

    name: str
    bus_kv: dict[str, float]
    """Line-to-line nominal kV per bus, in network order."""
    bus_phases: dict[str, str]
    slack_bus: str
    lines: list[PhaseBranch]
    transformers: list[PhaseBranch] = field(default_factory=list)
    switches: list[tuple[str, str]] = field(default_factory=list)
    shunt_pu: dict[str, complex] = field(default_factory=dict)
    """Constant-admittance shunts per node (capacitors: > 0 imaginary part)."""
    base_mva: float = 1.0

    def node_names(self) -> list[str]:
        return [f"{b}.{p}" for b, phases in self.bus_phases.items() for p in phases]

    def rated_branches(self) -> list[PhaseBranch]:
        """The branches whose loading is monitored (and charged): lines, then
        transformers, in that order (a branch without a rating reads 0 %)."""
        return [*self.lines, *self.transformers]

    def topology(self) -> FeederTopology:
        edges = [(br.from_bus, br.to_bus) for br in (*self.lines, *self.transformers)]
        return FeederTopology(self.slack_bus, tuple(edges + list(self.switches)),
                              tuple((br.from_bus, br.to_bus) for br in self.rated_branches()),
                              tuple(self.switches))


class ThreePhaseSolver:
    """Per-phase power flow: node loads (kW, kvar; > 0 consumption) in ``node_names``
    order in, node voltages and line loadings (worst conductor, worst end) out."""

    def __init__(self, feeder: PhaseFeeder, slack_vm_pu: float | tuple[float, float, float],
                 tol_pu: float = 1e-11, max_iter: int = 60, newton_max_iter: int = 30) -> None:
        self.feeder = feeder
        self.node_names = feeder.node_names()
        self.node_bus = [n.split(".")[0] for n in self.node_names]
        self.bus_names = list(feeder.bus_phases)
        self.line_names = [br.name for br in feeder.rated_branches()]
        """Every rated branch: the lines, then the transformers."""
        self.topology = feeder.topology()
        self.base_mva = feeder.base_mva

        # switch-fused buses share nodes: each node maps to its representative's index
        rep = {b: b for b in feeder.bus_phases}
        for a, b in feeder.switches:
            ra, rb = _find(rep, a), _find(rep, b)
            if feeder.bus_phases[a] != feeder.bus_phases[b]:
                raise ValueError(f"switch {a}-{b}: buses have phases "
                                 f"{feeder.bus_phases[a]!r} and {feeder.bus_phases[b]!r}")
            rep[rb] = ra
        internal: dict[str, int] = {}
        self._node_to_int = np.empty(len(self.node_names), dtype=int)
        for j, node in enumerate(self.node_names):
            bus, phase = node.split(".")
            key = f"{_find(rep, bus)}.{phase}"
            self._node_to_int[j] = internal.setdefault(key, len(internal))
        n = len(internal)

        def idx(bus: str, phases: str) -> np.ndarray:
            return np.array([internal[f"{_find(rep, bus)}.{p}"] for p in phases])

        ybus = np.zeros((n, n), dtype=complex)
        for br in (*feeder.lines, *feeder.transformers):
            ends = np.concatenate([idx(br.from_bus, br.phases), idx(br.to_bus, br.phases)])
            ybus[np.ix_(ends, ends)] += br.y_primitive()
        for node, y in feeder.shunt_pu.items():
            i = internal[f"{_find(rep, node.split('.')[0])}.{node.split('.')[1]}"]
            ybus[i, i] += y

        slack_phases = feeder.bus_phases[feeder.slack_bus]
        if slack_phases != PHASES:
            raise ValueError(f"slack bus {feeder.slack_bus}: needs three phases, has "
                             f"{slack_phases!r}")
        mags = (slack_vm_pu,) * 3 if np.isscalar(slack_vm_pu) else tuple(slack_vm_pu)
        v_slack = np.array([m * _ROTATE[p] for m, p in zip(mags, PHASES, strict=True)])
        self.core = ZBusIteration(ybus, idx(feeder.slack_bus, PHASES), v_slack,
                                  tol_pu, max_iter, newton_max_iter)
        pq_pos = np.full(n, -1)
        pq_pos[self.core.pq] = np.arange(len(self.core.pq))
        self._agg = np.zeros((len(self.core.pq), len(self.node_names)))
        for j, i_int in enumerate(self._node_to_int):
            if pq_pos[i_int] >= 0:
                self._agg[pq_pos[i_int], j] = 1.0

        # conductor currents of each line at both ends: rows of (Yf, Yt), line of each row
        rows_f, rows_t, scale, owner = [], [], [], []
        for k, br in enumerate(feeder.rated_branches()):
            ends = np.concatenate([idx(br.from_bus, br.phases), idx(br.to_bus, br.phases)])
            m = len(br.phases)
            rows = np.zeros((2 * m, n), dtype=complex)
            rows[:, ends] = br.y_primitive()  # I_ends = Y_prim V_ends
            rows_f.append(rows[:m])
            rows_t.append(rows[m:])
            i_base_ka = feeder.base_mva / (math.sqrt(3) * feeder.bus_kv[br.from_bus])
            scale += [i_base_ka / br.i_max_ka * 100.0] * m
            owner += [k] * m
        self._yf = np.vstack(rows_f)
        self._yt = np.vstack(rows_t)
        self._cond_scale = np.array(scale)[:, None]
        self._cond_line = np.array(owner)

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult:
        return self.solve_batch(*single_column(p_kw, q_kvar, len(self.node_names)))[0]

    def _voltages(self, p_kw: np.ndarray, q_kvar: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, int]:
        p_kw, q_kvar, finite = checked_batch(p_kw, q_kvar, len(self.node_names))
        # one node's power in units of a phase's base (base_mva / 3)
        s_node = (p_kw + 1j * q_kvar) / 1000.0 / (self.base_mva / 3.0)
        return self.core.solve(-(self._agg @ s_node.T), finite)

    def conductor_currents(self, p_kw: np.ndarray, q_kvar: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vm (B, nodes), from-end current phasor of every conductor in % of its rating
        (B, conductors), the line of each conductor): what a linear model of the line
        limits needs (|phasor| is the loading)."""
        v_int, _, _ = self._voltages(p_kw, q_kvar)
        return (np.abs(v_int[self._node_to_int].T), (self._yf @ v_int * self._cond_scale).T,
                self._cond_line)

    def solve_batch(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> BatchResult:
        """B power flows at once; ``p_kw``, ``q_kvar`` are (B, n_node)."""
        v_int, ok, iterations = self._voltages(p_kw, q_kvar)
        v_node = v_int[self._node_to_int].T
        cond = np.maximum(np.abs(self._yf @ v_int), np.abs(self._yt @ v_int)) * self._cond_scale
        loading = np.zeros((len(self.line_names), v_int.shape[1]))
        np.maximum.at(loading, self._cond_line, cond)
        loading = loading.T
        loading[~ok] = np.nan
        return BatchResult(ok, np.abs(v_node), np.degrees(np.angle(v_node)), loading,
                           iterations)


    def solve_spot_loads(self, loads: list[SpotLoad]) -> PowerFlowResult:
        """One power flow with published-style loads (wye or delta; constant power,
        impedance or current), e.g. the IEEE test case itself."""
        index = {name: self._node_to_int[j] for j, name in enumerate(self.node_names)}
        phase_base_mva = self.base_mva / 3.0
        terms = []
        for load in loads:
            nodes = [index[f"{load.bus}.{p}"] for p in load.phases]
            s = (load.p_kw + 1j * load.q_kvar) / 1000.0 / phase_base_mva
            terms.append((nodes, s, load.model, load.connection))

        def current(v: np.ndarray) -> np.ndarray:
            out = np.zeros(len(v), dtype=complex)
            for nodes, s, model, connection in terms:
                delta = connection == "D"
                vv = v[nodes[0]] - v[nodes[1]] if delta else v[nodes[0]]
                nominal = math.sqrt(3) if delta else 1.0
                if model == "PQ":
                    i = np.conj(s / vv)
                elif model == "Z":
                    i = np.conj(s) * vv / nominal ** 2
                else:  # constant current magnitude, power factor angle kept
                    i = np.conj(s / vv) * abs(vv) / nominal
                out[nodes[0]] -= i
                if delta:
                    out[nodes[1]] += i
            return out

        v_int = self.core.fixed_point_currents(current)
        if v_int is None:
            nan = np.full(len(self.node_names), np.nan)
            return PowerFlowResult(False, nan, nan.copy(), np.full(len(self.line_names), np.nan))
        v_node = v_int[self._node_to_int]
        cond = np.maximum(np.abs(self._yf @ v_int), np.abs(self._yt @ v_int)) * self._cond_scale[:, 0]
        loading = np.zeros(len(self.line_names))
        np.maximum.at(loading, self._cond_line, cond)
        return PowerFlowResult(True, np.abs(v_node), np.degrees(np.angle(v_node)), loading)


@dataclass(frozen=True)
class SpotLoad:
    """A load as test feeders publish them."""

    bus: str
    phases: str
    """One phase (wye) or the two phases of a delta branch ("ca")."""
    connection: str
    """"Y" (phase to neutral) or "D" (phase to phase)."""
    model: str
    """"PQ" constant power, "Z" constant impedance, "I" constant current (at nominal V)."""
    p_kw: float
    q_kvar: float


def _find(rep: dict[str, str], b: str) -> str:
    while rep[b] != b:
        b = rep[b]
    return b


def line_impedance_pu(z_ohm: np.ndarray, b_siemens: np.ndarray, kv: float, base_mva: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(series Z, shunt Y) of a line segment in per unit, from ohm and siemens."""
    z_base = kv ** 2 / base_mva
    return np.asarray(z_ohm) / z_base, 1j * np.asarray(b_siemens) * z_base
