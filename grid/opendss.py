"""An independent three-phase reference: a ``PhaseFeeder`` solved by OpenDSS.

pandapower's three-phase power flow cannot represent untransposed lines, so the fast
per-phase solver is checked against it only on a transposed variant of IEEE 13. OpenDSS
(EPRI's distribution solver, through ``opendssdirect.py``) takes the phase impedance
matrices as they are: this module writes the same feeder (lines with their full R, X
and C matrices, wye-wye transformers, switches as fused buses, the slack as a stiff
three-phase source) and the same wye constant-power node loads, so the two solvers can
be compared node by node on the real feeder (tests/test_threephase.py). Validation
only: nothing at run time needs OpenDSS (the ``test`` extra installs it).
"""

from __future__ import annotations

import math

import numpy as np

from peergrid.grid.powerflow import PowerFlowResult
from peergrid.grid.threephase import PhaseFeeder, _find

_PHASE_NO = {"a": 1, "b": 2, "c": 3}


def _lower(m: np.ndarray) -> str:
    """A symmetric matrix as OpenDSS's lower-triangle string."""
    n = m.shape[0]
    return "(" + " | ".join(" ".join(f"{m[i, j]:.12g}" for j in range(i + 1))
                            for i in range(n)) + ")"


class OpenDSSSolver:
    """``Solver``-like: node loads (kW, kvar) in ``node_names`` order in, voltages and
    branch loadings (lines, then transformers) out, from OpenDSS."""

    def __init__(self, feeder: PhaseFeeder, slack_vm_pu: float, f_hz: float = 60.0) -> None:
        import opendssdirect as dss

        self.dss, self.feeder, self.slack_vm_pu, self.f_hz = dss, feeder, slack_vm_pu, f_hz
        self.node_names = feeder.node_names()
        rep = {b: b for b in feeder.bus_phases}
        for a, b in feeder.switches:
            rep[_find(rep, b)] = _find(rep, a)
        self._bus = {b: _find(rep, b) for b in feeder.bus_phases}
        self._base = self._network()

    def _network(self) -> list[str]:
        f, w = self.feeder, 2 * math.pi * self.f_hz
        kv0 = f.bus_kv[f.slack_bus]
        cmds = ["clear", f"New Circuit.feeder bus1={f.slack_bus} basekv={kv0} "
                f"pu={self.slack_vm_pu} angle=0 MVAsc3=1e12 MVAsc1=1e12"]
        for k, br in enumerate(f.lines):
            z_base = f.bus_kv[br.from_bus] ** 2 / f.base_mva
            z, b = br.z_pu * z_base, br.y_shunt_pu.imag / z_base  # ohm, siemens
            c_nf = b / w * 1e9
            nodes = "." + ".".join(str(_PHASE_NO[p]) for p in br.phases)
            amps = br.i_max_ka * 1000.0 if math.isfinite(br.i_max_ka) else 1e6
            cmds.append(
                f"New Line.l{k} phases={len(br.phases)} bus1={self._bus[br.from_bus]}{nodes} "
                f"bus2={self._bus[br.to_bus]}{nodes} length=1 units=none "
                f"rmatrix={_lower(z.real)} xmatrix={_lower(z.imag)} cmatrix={_lower(c_nf)} "
                f"normamps={amps} emergamps={amps}")
        for k, tr in enumerate(f.transformers):
            kva = math.sqrt(3) * f.bus_kv[tr.from_bus] * tr.i_max_ka * 1000.0
            z_pct = complex(tr.z_pu[0, 0]) * kva / 1000.0 / f.base_mva * 100.0
            cmds.append(
                f"New Transformer.t{k} phases=3 windings=2 buses=({self._bus[tr.from_bus]} "
                f"{self._bus[tr.to_bus]}) conns=(wye wye) kvs=({f.bus_kv[tr.from_bus]} "
                f"{f.bus_kv[tr.to_bus]}) kvas=({kva} {kva}) %rs=({z_pct.real / 2} "
                f"{z_pct.real / 2}) xhl={z_pct.imag} %noloadloss=0 %imag=0")
        kvs = sorted(set(f.bus_kv.values()), reverse=True)
        cmds += [f"Set voltagebases=({' '.join(map(str, kvs))})", "Calcvoltagebases"]
        return cmds

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult:
        dss, f = self.dss, self.feeder
        cmds = list(self._base)
        for j, node in enumerate(self.node_names):
            bus, phase = node.split(".")
            if bus == f.slack_bus or (p_kw[j] == 0 and q_kvar[j] == 0):
                continue
            kv = f.bus_kv[bus] / math.sqrt(3)
            cmds.append(f"New Load.n{j} bus1={self._bus[bus]}.{_PHASE_NO[phase]} phases=1 "
                        f"conn=wye kv={kv:.12g} kw={p_kw[j]:.12g} kvar={q_kvar[j]:.12g} "
                        f"model=1 vminpu=0.01 vmaxpu=10")
        cmds += ["Set maxiterations=100", "Set tolerance=1e-12", "Solve"]
        for c in cmds:
            dss.Text.Command(c)
        names = [n.lower() for n in dss.Circuit.AllNodeNames()]
        mags = dict(zip(names, dss.Circuit.AllBusMagPu(), strict=True))
        angles = dict(zip(names, np.array(dss.Circuit.AllBusVolts()).reshape(-1, 2) @ [1, 1j],
                          strict=True))
        vm, va = [], []
        for node in self.node_names:
            bus, phase = node.split(".")
            key = f"{self._bus[bus]}.{_PHASE_NO[phase]}".lower()
            vm.append(mags[key])
            va.append(math.degrees(np.angle(angles[key])))
        loading = []
        for kind, branches in (("Line.l", f.lines), ("Transformer.t", f.transformers)):
            for k, br in enumerate(branches):
                dss.Circuit.SetActiveElement(f"{kind}{k}")
                amps = np.array(dss.CktElement.CurrentsMagAng()).reshape(-1, 2)[:, 0]
                rating = br.i_max_ka * 1000.0
                # the from-side conductors (transformers: the HV winding, in its amperes)
                worst = amps[:len(br.phases)] if kind == "Transformer.t" else amps[
                    :2 * len(br.phases)]
                loading.append(float(worst.max() / rating * 100.0)
                               if math.isfinite(rating) else 0.0)
        converged = bool(dss.Solution.Converged())
        return PowerFlowResult(converged, np.array(vm), np.array(va), np.array(loading))
