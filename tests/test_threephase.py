"""The IEEE 13-node feeder per phase: the published case, and pandapower's runpp_3ph."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from peergrid.grid.feeders.ieee13 import (PUBLISHED_REGULATOR_VM_PU, PUBLISHED_VM_PU,
                                          build_ieee13_sequence, phase_feeder,
                                          published_spot_loads)
from peergrid.grid.powerflow import PandapowerPhaseSolver
from peergrid.grid.threephase import ThreePhaseSolver

DV_PU = 1e-6


@pytest.fixture(scope="module")
def published():
    feeder = phase_feeder("kersting", with_capacitors=True)
    solver = ThreePhaseSolver(feeder, PUBLISHED_REGULATOR_VM_PU)
    result = solver.solve_spot_loads(published_spot_loads())
    assert result.converged
    return feeder, dict(zip(solver.node_names, result.vm_pu, strict=True))


@pytest.fixture(scope="module")
def pair():
    return (ThreePhaseSolver(phase_feeder("sequence"), 1.02),
            PandapowerPhaseSolver(build_ieee13_sequence(1.02)))


def test_per_phase_model_reproduces_the_published_voltages(published):
    feeder, vm = published
    errors = [vm[f"{bus}.{p}"] - v for bus, values in PUBLISHED_VM_PU.items()
              for p, v in zip(feeder.bus_phases[bus], values, strict=True)]
    assert len(errors) == 29
    assert max(abs(e) for e in errors) <= 0.002


def test_per_phase_model_shows_the_published_phase_b_overvoltage(published):
    # the untransposed lines lift lightly loaded phase B above the regulator's 1.05 pu,
    # which no balanced equivalent can show
    _, vm = published
    for bus in ("671", "675", "680", "692"):
        assert vm[f"{bus}.b"] > 1.05
        assert PUBLISHED_VM_PU[bus][1] > 1.05


def test_one_phase_laterals_have_only_their_phase():
    feeder = phase_feeder("kersting")
    assert feeder.bus_phases["611"] == "c" and feeder.bus_phases["652"] == "a"
    assert feeder.bus_phases["645"] == "bc" and feeder.bus_phases["684"] == "ac"


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_fast_per_phase_solver_matches_runpp_3ph(pair, data):
    fast, ref = pair
    assert fast.node_names == ref.node_names
    n = len(fast.node_names)
    p = data.draw(arrays(float, n, elements=st.floats(-300, 400)))
    q = data.draw(arrays(float, n, elements=st.floats(-100, 150)))
    a = fast.solve(p, q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = ref.solve(p, q)
    # up to 16 MW on a 4.16 kV feeder: compare where the feeder could operate (the
    # reference converged and no node is below 0.8 pu); nearer collapse both solvers
    # stop at their own tolerance on a flat Jacobian and may part by more than 1e-6 pu,
    # or one may not converge at all (which the grid operator reports as such)
    assume(b.converged and np.nanmin(b.vm_pu) >= 0.8)
    assert a.converged
    assert np.max(np.abs(a.vm_pu - b.vm_pu)) <= DV_PU
    assert np.max(np.abs(a.va_degree - b.va_degree)) <= 1e-4
    assert np.max(np.abs(a.line_loading_pct - b.line_loading_pct)) <= 1e-3


@pytest.fixture(scope="module")
def opendss_pair():
    from peergrid.grid.opendss import OpenDSSSolver

    feeder = phase_feeder("kersting")
    return ThreePhaseSolver(feeder, 1.03), OpenDSSSolver(feeder, 1.03)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_fast_per_phase_solver_matches_opendss_on_the_real_untransposed_feeder(opendss_pair,
                                                                               data):
    # the independent three-phase reference for the model the scenario uses: OpenDSS
    # with the published phase matrices as they are (runpp_3ph cannot represent them)
    fast, ref = opendss_pair
    n = len(fast.node_names)
    p = data.draw(arrays(float, n, elements=st.floats(-300, 400)))
    q = data.draw(arrays(float, n, elements=st.floats(-100, 150)))
    a = fast.solve(p, q)
    b = ref.solve(p, q)
    assume(a.converged and b.converged and np.all(b.vm_pu > 0.5))
    assert np.max(np.abs(a.vm_pu - b.vm_pu)) <= DV_PU
    assert np.max(np.abs(a.va_degree - b.va_degree)) <= 1e-4
    assert np.max(np.abs(a.line_loading_pct - b.line_loading_pct)) <= 1e-2


def test_batch_equals_one_solve_per_column():
    solver = ThreePhaseSolver(phase_feeder("kersting"), 1.03)
    rng = np.random.default_rng(3)
    p = rng.uniform(-300, 400, (16, len(solver.node_names)))
    q = 0.3 * np.abs(p)
    batch = solver.solve_batch(p, q)
    for b in (0, 7, 15):  # equal to the iteration's tolerance (1e-11 pu)
        one = solver.solve(p[b], q[b])
        assert np.max(np.abs(batch.vm_pu[b] - one.vm_pu)) < 1e-10
        assert np.max(np.abs(batch.line_loading_pct[b] - one.line_loading_pct)) < 1e-7


def test_zero_injections_leave_every_phase_at_the_regulator_output():
    solver = ThreePhaseSolver(phase_feeder("kersting"), 1.03)
    zero = np.zeros(len(solver.node_names))
    res = solver.solve(zero, zero)
    assert np.allclose(res.vm_pu, 1.03, atol=3e-4)  # only line charging remains


def test_a_one_phase_lateral_carries_the_whole_load_on_its_conductor():
    # 230 A of 1/0 ACSR at 2.40 kV line-to-neutral is ~552 kVA: 500 kW on 611.c loads it
    # to ~90 %, while a balanced lateral would show a third of that
    solver = ThreePhaseSolver(phase_feeder("kersting"), 1.0)
    p = np.zeros(len(solver.node_names))
    p[solver.node_names.index("611.c")] = 500.0
    res = solver.solve(p, np.zeros_like(p))
    loading = dict(zip(solver.line_names, res.line_loading_pct, strict=True))
    assert 85.0 < loading["684-611"] < 100.0


def test_switch_fuses_692_with_671():
    solver = ThreePhaseSolver(phase_feeder("kersting"), 1.0)
    p = np.zeros(len(solver.node_names))
    p[solver.node_names.index("675.a")] = 300.0
    vm = dict(zip(solver.node_names, solver.solve(p, 0 * p).vm_pu, strict=True))
    assert all(vm[f"692.{x}"] == vm[f"671.{x}"] for x in "abc")


def test_downstream_buses_of_each_line():
    topo = ThreePhaseSolver(phase_feeder("kersting"), 1.0).topology
    down = dict(zip([f"{a}-{b}" for a, b in topo.line_ends], topo.downstream_buses(),
                    strict=True))
    assert down["684-611"] == {"611"}
    assert down["671-684"] == {"684", "611", "652"}
    assert down["650-632"] == set(phase_feeder().bus_phases) - {"650"}
