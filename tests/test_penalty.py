"""Who pays for a violation: once per round, shared by the injections that caused it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peergrid.grid.penalty import (PenaltyRule, allocate, bus_violations, observed_voltage,
                                   share, violation_pu)

RULE = PenaltyRule(0.95, 1.05, voltage_penalty_per_pu=1000.0, line_penalty_per_pu=100.0)
NODE_BUS = {"b1.a": "b1", "b1.b": "b1", "b2": "b2"}


def test_violation_is_distance_outside_limits():
    v = violation_pu(np.array([0.94, 0.95, 1.0, 1.05, 1.07]), 0.95, 1.05)
    assert v == pytest.approx([0.01, 0.0, 0.0, 0.0, 0.02])


def test_a_bus_is_out_by_its_worst_phase():
    got = bus_violations({"b1.a": 1.06, "b1.b": 1.07, "b2": 0.93}, NODE_BUS, 0.95, 1.05)
    assert got["b1"] == pytest.approx((0.02, 0.0))
    assert got["b2"] == pytest.approx((0.0, 0.02))


def test_overvoltage_is_charged_once_and_shared_by_export():
    # three agents at b1: x exports 300 kW, y 100 kW, z imports; 0.02 pu over -> 20
    got = allocate(RULE, {"b1.a": 1.07, "b1.b": 1.0, "b2": 1.0}, NODE_BUS, {}, {},
                   {"x": "b1", "y": "b1", "z": "b1", "w": "b2"},
                   {"x": 300.0, "y": 100.0, "z": -50.0, "w": 10.0})
    assert sum(got.voltage.values()) == pytest.approx(20.0)
    assert got.voltage == pytest.approx({"x": 15.0, "y": 5.0, "z": 0.0, "w": 0.0})


def test_undervoltage_is_shared_by_import_and_equally_without_importers():
    agents = {"x": "b1", "y": "b1"}
    low = {"b1.a": 0.94, "b1.b": 0.96, "b2": 1.0}
    by_import = allocate(RULE, low, NODE_BUS, {}, {}, agents, {"x": -30.0, "y": -10.0})
    assert by_import.voltage == pytest.approx({"x": 7.5, "y": 2.5})
    nobody = allocate(RULE, low, NODE_BUS, {}, {}, agents, {"x": 30.0, "y": 10.0})
    assert nobody.voltage == pytest.approx({"x": 5.0, "y": 5.0})


def test_violation_at_a_bus_without_agents_is_reported_not_charged():
    got = allocate(RULE, {"b1.a": 1.0, "b1.b": 1.0, "b2": 1.07}, NODE_BUS, {}, {},
                   {"x": "b1"}, {"x": 100.0})
    assert got.voltage == {"x": 0.0}
    assert got.voltage_unallocated == pytest.approx(20.0)


def test_line_overload_is_shared_downstream_in_the_direction_of_the_flow():
    agents = {"x": "b2", "y": "b2", "z": "b1"}
    # line l feeds b2; its 20 % overload costs 100 x 0.2 = 20
    reverse = allocate(RULE, {"b2": 1.0}, {"b2": "b2"}, {"l": 120.0}, {"l": frozenset({"b2"})},
                       agents, {"x": 300.0, "y": -100.0, "z": 500.0})
    assert reverse.line == pytest.approx({"x": 20.0, "y": 0.0, "z": 0.0})
    forward = allocate(RULE, {"b2": 1.0}, {"b2": "b2"}, {"l": 120.0}, {"l": frozenset({"b2"})},
                       agents, {"x": 100.0, "y": -300.0, "z": 500.0})
    assert forward.line == pytest.approx({"x": 0.0, "y": 20.0, "z": 0.0})


def test_feeder_scope_splits_the_total_equally():
    rule = PenaltyRule(0.95, 1.05, 1000.0, 100.0, scope="feeder")
    got = allocate(rule, {"b1.a": 1.07, "b1.b": 1.0, "b2": 0.94}, NODE_BUS, {"l": 110.0},
                   {"l": frozenset({"b2"})}, {"x": "b1", "y": "b2"}, {"x": 1.0, "y": 1.0})
    assert got.voltage == pytest.approx({"x": 15.0, "y": 15.0})
    assert got.line == pytest.approx({"x": 5.0, "y": 5.0})


def test_a_failed_power_flow_is_charged_once_as_a_full_pu_and_shared():
    got = allocate(RULE, {}, {}, {}, {}, {"x": "b1", "y": "b2"}, {"x": 0.0, "y": 0.0},
                   converged=False)
    assert got.voltage == {"x": 500.0, "y": 500.0}


@settings(max_examples=300, deadline=None)
@given(vm=st.lists(st.floats(0.9, 1.1), min_size=3, max_size=3),
       exports=st.lists(st.floats(-500, 500), min_size=4, max_size=4),
       loading=st.floats(0, 200))
def test_what_is_charged_plus_what_is_not_equals_the_violation(vm, exports, loading):
    nodes = dict(zip(NODE_BUS, vm, strict=True))
    agents = {"x": "b1", "y": "b1", "z": "b2", "w": "b3"}
    got = allocate(RULE, nodes, NODE_BUS, {"l": loading}, {"l": frozenset({"b2"})}, agents,
                   dict(zip(agents, exports, strict=True)))
    expected = sum(1000.0 * (o + u) for o, u in bus_violations(nodes, NODE_BUS, 0.95,
                                                                 1.05).values())
    assert sum(got.voltage.values()) + got.voltage_unallocated == pytest.approx(expected)
    assert sum(got.line.values()) == pytest.approx(100.0 * max(loading / 100.0 - 1.0, 0.0))
    assert all(v >= 0 for v in (*got.voltage.values(), *got.line.values()))


def test_share_is_proportional_or_equal():
    assert share(10.0, {"a": 3.0, "b": 1.0}) == pytest.approx({"a": 7.5, "b": 2.5})
    assert share(10.0, {"a": 0.0, "b": 0.0}) == pytest.approx({"a": 5.0, "b": 5.0})
    # a subnormal weight still gets the whole amount (amount x w underflowed before)
    assert share(12.5, {"x": 0.0, "y": 5e-324}) == {"x": 0.0, "y": 12.5}


def test_an_agent_sees_its_phase_farthest_from_the_middle_of_the_band():
    vm = {"671.a": 1.01, "671.b": 0.96, "671.c": 1.045}
    assert observed_voltage(vm, ["671.a", "671.b", "671.c"], 0.95, 1.05) == 1.045
    assert observed_voltage(vm, ["671.b"], 0.95, 1.05) == 0.96


# ---- who pays at fused buses and at buses without agents -----------------------------

def _small_feeder():
    from peergrid.grid.powerflow import FeederTopology

    # s - b1 - b2 - b3 (= b5 by a closed switch); b2 - b4 (a dead end); agents x at b3,
    # y at b5, z at b1
    edges = (("s", "b1"), ("b1", "b2"), ("b2", "b3"), ("b2", "b4"), ("b3", "b5"))
    return FeederTopology("s", edges, edges[:4], fused=(("b3", "b5"),))


def test_buses_fused_by_a_switch_are_one_node_charged_once():
    topo = _small_feeder()
    groups = topo.bus_groups()
    assert groups["b3"] == groups["b5"] == "b3/b5"
    agent_bus = {"x": "b3", "y": "b5", "z": "b1"}
    payers = topo.voltage_payers(agent_bus)
    assert payers["b3/b5"] == ("x", "y")
    nodes = {"b3": 1.07, "b5": 1.07, "b1": 1.0, "b2": 1.0, "b4": 1.0, "s": 1.0}
    got = allocate(RULE, nodes, {n: groups[n] for n in nodes}, {}, {}, agent_bus,
                   {"x": 100.0, "y": 100.0, "z": 0.0}, payers=payers)
    assert got.voltage == pytest.approx({"x": 10.0, "y": 10.0, "z": 0.0})  # 0.02 pu once


def test_a_bus_without_agents_is_charged_to_those_downstream_and_a_dead_end_is_its_parent():
    topo = _small_feeder()
    agent_bus = {"x": "b3", "y": "b5", "z": "b1"}
    assert topo.bus_groups()["b4"] == "b4"  # no agents given: only switches fuse
    groups = topo.bus_groups(agent_bus.values())
    assert groups["b2"] == groups["b4"] == "b2/b4"  # no current in b4: b2's voltage
    payers = topo.voltage_payers(agent_bus)
    assert payers["b2/b4"] == ("x", "y")  # their power flows through b2
    assert set(payers["s"]) == {"x", "y", "z"}
    # the same excursion at b2 and its dead end is charged once
    nodes = {"s": 1.0, "b1": 1.0, "b2": 1.07, "b4": 1.07, "b3": 1.0, "b5": 1.0}
    got = allocate(RULE, nodes, {n: groups[n] for n in nodes}, {}, {}, agent_bus,
                   {"x": 100.0, "y": 100.0, "z": 0.0}, payers=payers)
    assert got.voltage == pytest.approx({"x": 10.0, "y": 10.0, "z": 0.0})


def test_on_ieee13_every_violation_has_someone_to_pay_for_it():
    from peergrid.grid.feeders.ieee13 import phase_feeder
    from peergrid.scenarios.definition.loader import load_scenario

    s = load_scenario("ieee13")
    topo = phase_feeder("kersting").topology()
    payers = topo.voltage_payers({a.id: a.bus for a in s.agents})
    assert all(payers.values())
    # 671 and 692 by their switch, 680 as an empty dead end off 671
    assert payers["671/680/692"] == ("a07", "a08", "a09", "a12")
    assert set(payers["684"]) == {"a05", "a13"}


def test_the_grid_operator_charges_ieee13s_central_node_once():
    # 671, 692 (a closed switch) and 680 (a dead end without agents) read the same
    # voltage: one excursion, one charge, to the agents at that node
    from peergrid.market.bid import Bid
    from peergrid.scenarios.runtime.community import make_grid_operator
    from peergrid.scenarios.definition.loader import load_scenario

    s = load_scenario("ieee13")
    grid = make_grid_operator(s, 0.25)
    bids = {a.id: Bid(a.id, a.bus, 0, 0.0, 0.0, 0.0) for a in s.agents}
    bids["a07"] = Bid("a07", "692", 0, 0.0, 600.0, 0.0)  # 2.4 MW exported at 692
    signal = grid.solve(0, bids)
    central = [v for n, v in signal.vm_pu.items() if n.split(".")[0] in ("671", "680", "692")]
    over = max(central) - s.feeder.vm_max_pu
    assert over > 0.0
    at_node = sum(signal.voltage_penalty[a] for a in ("a07", "a08", "a09", "a12"))
    assert at_node == pytest.approx(grid.rule.voltage_penalty_per_pu * over, rel=1e-9)
