"""Autonomous inverter control: the IEEE 1547-2018 volt-var curve, settled with the
power flow.

An inverter in volt-var mode sets its reactive power from the voltage at its terminals
within seconds (IEEE 1547-2018: open-loop response time 5 s by default); over an hourly
round that is a steady state, the fixed point V = powerflow(Q), Q = curve(V). Applying
the curve to the previous round's voltage instead would be an hour of delay in a
feedback loop, which oscillates on a stiff curve with large inverters. The grid
operator therefore settles it like OpenDSS's control iterations: damped updates of Q
until it no longer changes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

VOLT_VAR_CURVE = ((0.92, 0.44), (0.98, 0.0), (1.02, 0.0), (1.08, -0.44))
"""IEEE 1547-2018 category B default: (V pu, Q in pu of the inverter's kVA rating,
> 0 injected)."""
VOLT_WATT_CURVE = ((1.06, 1.0), (1.10, 0.2))
"""IEEE 1547-2018 default volt-watt for a DER that cannot absorb active power (PV):
(V pu, active power limit in pu of its active power rating); P2 = 0.2 at V2 = 1.10."""


def volt_var_pu(vm_pu: np.ndarray | float) -> np.ndarray:
    """Reactive power of the volt-var curve, pu of the inverter rating."""
    v, q = zip(*VOLT_VAR_CURVE)
    return np.interp(vm_pu, v, q)


def volt_watt_pu(vm_pu: np.ndarray | float) -> np.ndarray:
    """Active-power limit of the volt-watt curve, pu of the active power rating."""
    v, p = zip(*VOLT_WATT_CURVE)
    return np.interp(vm_pu, v, p)


def settle_volt_var(voltages: Callable[[np.ndarray], np.ndarray], rating_kva: np.ndarray,
                    q_max_kvar: np.ndarray, tol_kvar: float = 1e-3, max_iter: int = 200
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
    """(Q kvar, the voltages at it, settled) for inverters following the volt-var curve.

    ``voltages(q)`` runs the power flow with the inverters' reactive powers ``q`` and
    returns each inverter's terminal voltage (NaN if the flow failed). The update is
    damped, and the damping halves whenever the residual grows, so a stiff curve on a
    weak feeder settles instead of oscillating.
    """
    q = np.zeros(len(rating_kva))
    alpha, last = 0.5, np.inf
    vm = voltages(q)
    for _ in range(max_iter):
        if not np.isfinite(vm).all():
            return q, vm, False
        target = np.clip(volt_var_pu(vm) * rating_kva, -q_max_kvar, q_max_kvar)
        residual = float(np.max(np.abs(target - q), initial=0.0))
        if residual <= tol_kvar:
            return q, vm, True
        if residual > last:
            alpha *= 0.5
        last = residual
        q = q + alpha * (target - q)
        vm = voltages(q)
    return q, vm, False
