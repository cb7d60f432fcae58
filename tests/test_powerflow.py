"""The fast Z-bus solver against pandapower.runpp and against published feeder results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from peergrid.agents.policies import make_policy
from peergrid.grid.feeders import FEEDERS, base_loads, build_feeder
from peergrid.grid.feeders.ieee13 import build_ieee13
from peergrid.grid.powerflow import PandapowerSolver
from peergrid.grid.zbus import ZBusSolver
from peergrid.scenarios.runtime.community import Community

DV_PU, DA_RAD = 1e-6, 1e-5


@pytest.fixture(scope="module", params=sorted(FEEDERS))
def pair(request):
    net = build_feeder(request.param, slack_vm_pu=1.02)
    return request.param, ZBusSolver(net), PandapowerSolver(net)


def base_vectors(name: str, solver) -> tuple[np.ndarray, np.ndarray]:
    loads = base_loads(name)
    p = np.array([loads.get(b, (0.0, 0.0))[0] for b in solver.bus_names])
    q = np.array([loads.get(b, (0.0, 0.0))[1] for b in solver.bus_names])
    return p, q


def assert_same(fast, ref) -> None:
    assert fast.converged and ref.converged
    assert np.max(np.abs(fast.vm_pu - ref.vm_pu)) <= DV_PU
    assert np.max(np.abs(np.radians(fast.va_degree - ref.va_degree))) <= DA_RAD
    assert np.max(np.abs(fast.line_loading_pct - ref.line_loading_pct)) <= 1e-4


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_fast_solver_matches_runpp_on_random_injections(pair, data):
    name, fast, ref = pair
    p0, q0 = base_vectors(name, fast)
    scale = float(np.mean(p0[p0 > 0]))
    n = len(fast.bus_names)
    # each bus draws anywhere from 1.5 x the average base load to the same in export
    p = data.draw(arrays(float, n, elements=st.floats(-1.5, 1.5))) * scale
    q = data.draw(arrays(float, n, elements=st.floats(-0.5, 0.5))) * scale
    assert_same(fast.solve(p, q), ref.solve(p, q))


def test_fast_solver_matches_runpp_at_base_load_and_in_reverse(pair):
    name, fast, ref = pair
    p, q = base_vectors(name, fast)
    for s in (1.0, -1.0, 1.3):
        assert_same(fast.solve(s * p, s * q), ref.solve(s * p, s * q))


def test_batch_equals_one_solve_per_column(pair):
    name, fast, _ = pair
    p, q = base_vectors(name, fast)
    rng = np.random.default_rng(7)
    factors = rng.uniform(-1.0, 1.5, size=(64, len(p)))
    batch = fast.solve_batch(factors * p, factors * q)
    assert batch.converged.all()
    for b in (0, 17, 63):
        one = fast.solve(factors[b] * p, factors[b] * q)
        assert np.max(np.abs(batch.vm_pu[b] - one.vm_pu)) < 1e-12
        assert np.max(np.abs(batch.line_loading_pct[b] - one.line_loading_pct)) < 1e-9


def test_newton_fallback_gives_the_same_answer(pair):
    name, _, ref = pair
    fallback_only = ZBusSolver(build_feeder(name, slack_vm_pu=1.02), max_iter=1)
    p, q = base_vectors(name, fallback_only)
    assert_same(fallback_only.solve(1.2 * p, 1.2 * q), ref.solve(1.2 * p, 1.2 * q))


def test_case33bw_base_load_reproduces_baran_wu():
    # Baran & Wu (1989): lowest voltage 0.9131 pu at bus 18, the end of the main feeder.
    solver = ZBusSolver(build_feeder("case33bw", slack_vm_pu=1.0, with_base_loads=True))
    zero = np.zeros(len(solver.bus_names))
    res = solver.solve(zero, zero)
    assert res.converged
    assert solver.bus_names[int(np.argmin(res.vm_pu))] == "18"
    assert res.vm_pu.min() == pytest.approx(0.9131, abs=5e-4)


@pytest.mark.parametrize("name", sorted(FEEDERS))
def test_zero_injection_profile_is_set_by_the_slack(name):
    net = (build_ieee13(slack_vm_pu=1.02, with_capacitors=False) if name == "ieee13"
           else build_feeder(name, slack_vm_pu=1.02))
    solver = ZBusSolver(net)
    zero = np.zeros(len(solver.bus_names))
    res = solver.solve(zero, zero)
    # only line charging remains; no load means no drop
    assert np.allclose(res.vm_pu, 1.02, atol=3e-4)


@pytest.mark.parametrize("name", sorted(FEEDERS))
def test_reverse_pv_surplus_raises_voltages_above_the_slack(name):
    solver = ZBusSolver(build_feeder(name, slack_vm_pu=1.0))
    p, _ = base_vectors(name, solver)
    res = solver.solve(-p, np.zeros_like(p))  # every load bus exports its base load
    loaded = p > 0
    assert (res.vm_pu[loaded] > 1.0).all()
    far = int(np.argmax(np.where(loaded, res.vm_pu, 0)))
    assert res.vm_pu[far] > 1.005


def test_impossible_injection_is_reported_not_solved(pair):
    name, fast, ref = pair
    p, q = base_vectors(name, fast)
    res = fast.solve(50 * p, 50 * q)
    assert not res.converged
    assert np.isnan(res.vm_pu).all() and np.isnan(res.line_loading_pct).all()
    assert not ref.solve(50 * p, 50 * q).converged


def test_bad_columns_fail_alone_in_a_batch(pair):
    name, fast, _ = pair
    p, q = base_vectors(name, fast)
    batch_p = np.stack([p, 50 * p, p * np.nan, -p])
    batch = fast.solve_batch(batch_p, np.stack([q, 50 * q, q, -q]))
    assert batch.converged.tolist() == [True, False, False, True]
    assert np.isfinite(batch.vm_pu[[0, 3]]).all()


def test_wrong_shape_is_a_clear_error(pair):
    _, fast, _ = pair
    with pytest.raises(ValueError, match="shape"):
        fast.solve(np.zeros(3), np.zeros(3))


def test_unsupported_network_is_refused():
    import pandapower as pp

    net = build_feeder("case33bw")
    pp.create_gen(net, 5, p_mw=0.1, vm_pu=1.0)
    with pytest.raises(ValueError, match="gen"):
        ZBusSolver(net)


def _day_of_grid_rows(scenario) -> pd.DataFrame:
    community = Community(scenario, days=1)
    policies = {p.spec.agent_id: make_policy("rule", p.spec, p.dt_h) for p in community.prosumers}
    rows = []
    for k in range(community.n_rounds):
        actions = {aid: policies[aid](community.observe(i, k))
                   for i, aid in enumerate(community.agent_ids)}
        rows.append(community.run_round(k, actions).grid)
    return pd.DataFrame(rows)


def test_a_whole_day_gives_the_same_voltages_with_either_solver(ieee13_scenario):
    assert ieee13_scenario.feeder.solver == "fast"
    balanced = ieee13_scenario.model_copy(  # pandapower's runpp solves the balanced model
        update={"feeder": ieee13_scenario.feeder.model_copy(update={"model": "balanced"})})
    reference = balanced.model_copy(
        update={"feeder": balanced.feeder.model_copy(update={"solver": "pandapower"})})
    fast, ref = _day_of_grid_rows(balanced), _day_of_grid_rows(reference)
    vm_cols = [c for c in fast.columns if c.startswith("vm_pu.")]
    assert len(vm_cols) == 14 and len(fast) == 24
    assert fast.converged.all() and ref.converged.all()
    assert np.max(np.abs(fast[vm_cols].to_numpy() - ref[vm_cols].to_numpy())) <= DV_PU
    load_cols = [c for c in fast.columns if c.startswith("loading_pct.")]
    assert np.max(np.abs(fast[load_cols].to_numpy() - ref[load_cols].to_numpy())) <= 1e-4
