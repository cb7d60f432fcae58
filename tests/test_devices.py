"""Battery dynamics: limits, efficiencies, clipping records."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peergrid.agents.devices import BatterySpec, feasible_range_kw, step_battery

SPEC = BatterySpec(
    capacity_kwh=10.0, charge_kw_max=5.0, discharge_kw_max=4.0,
    eta_charge=0.9, eta_discharge=0.8, soc_min=0.1, soc_max=0.9, soc_init=0.5,
)


def test_charging_stores_eta_times_energy():
    out = step_battery(SPEC, 0.5, 2.0, dt_h=1.0)
    assert out.battery_kw == 2.0 and out.clip_kw == 0.0
    assert out.soc == pytest.approx(0.5 + 2.0 * 0.9 / 10.0)


def test_discharging_draws_energy_over_eta():
    out = step_battery(SPEC, 0.5, -2.0, dt_h=1.0)
    assert out.soc == pytest.approx(0.5 - 2.0 / 0.8 / 10.0)


def test_request_above_power_limit_is_clipped_and_recorded():
    out = step_battery(SPEC, 0.5, 7.0, dt_h=0.25)
    assert out.battery_kw == 5.0 and out.clip_kw == pytest.approx(2.0)


def test_full_battery_cannot_charge():
    out = step_battery(SPEC, 0.9, 3.0, dt_h=1.0)
    assert out.battery_kw == 0.0 and out.clip_kw == 3.0 and out.soc == 0.9


def test_energy_limit_binds_before_power_limit():
    # 0.2 of 10 kWh headroom = 2 kWh of storage = 2/0.9 kWh from the bus in one hour.
    low, high = feasible_range_kw(SPEC, 0.7, 1.0)
    assert high == pytest.approx(2.0 / 0.9)
    assert low == pytest.approx(-4.0)


def test_consumer_without_battery_clips_everything():
    out = step_battery(BatterySpec(), 0.5, 1.5, dt_h=1.0)
    assert out.battery_kw == 0.0 and out.clip_kw == 1.5


@settings(max_examples=500)
@given(
    st.floats(0.1, 0.9),
    st.lists(st.floats(-20, 20, allow_nan=False), min_size=1, max_size=48),
    st.sampled_from([0.25, 0.5, 1.0]),
)
def test_soc_stays_within_bounds_and_clip_accounts_for_request(soc, requests, dt_h):
    for req in requests:
        out = step_battery(SPEC, soc, req, dt_h)
        assert SPEC.soc_min - 1e-12 <= out.soc <= SPEC.soc_max + 1e-12
        assert out.battery_kw + out.clip_kw == pytest.approx(req)
        assert -SPEC.discharge_kw_max - 1e-12 <= out.battery_kw <= SPEC.charge_kw_max + 1e-12
        soc = out.soc
