"""The perfect-foresight optima: solve time and what the AC replay measures.

Run: ``python bench/optimum.py [--scenarios ieee13 case33bw]``. For each scenario, over
its evaluation window as one continuous stretch: the voltage-blind LP (batteries only)
and the voltage-aware LP (batteries, curtailment, reactive power under the linearised
AC limits, re-linearised until the AC power flow shows no violation), their solve times
(wall clock, this run), the number of linearisations, and the replay through the env.
The last line is machine-readable:

    optimum ieee13_blind_s=<x> ieee13_aware_s=<y> ieee13_aware_violations=<n>
"""

from __future__ import annotations

import argparse

from peergrid.scenarios.commands.experiment import optimum_metrics
from peergrid.scenarios.definition.loader import load_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["ieee13", "case33bw"])
    args = parser.parse_args()
    print(f"{'scenario':<12}{'optimum':<10}{'agents':>7}{'solve s':>9}{'cost':>11}"
          f"{'viol. rounds':>14}{'max load %':>12}{'curtailed kWh':>15}")
    out: dict[str, float] = {}
    for name in args.scenarios:
        s = load_scenario(name)
        for kind in ("blind", "aware"):
            m = optimum_metrics(s, f"optimum (voltage-{kind})")
            out[f"{name}_{kind}_s"] = m["solve_s"]
            out[f"{name}_{kind}_violations"] = m["voltage_violations"]
            print(f"{name:<12}{kind:<10}{len(s.agents):>7}{m['solve_s']:>9.2f}"
                  f"{m['community_cost']:>11,.0f}{m['voltage_violations']:>14}"
                  f"{m['max_line_loading_pct']:>12.1f}{m['curtailed_kwh']:>15,.0f}")
    print(f"optimum ieee13_blind_s={out.get('ieee13_blind_s', float('nan')):.2f} "
          f"ieee13_aware_s={out.get('ieee13_aware_s', float('nan')):.2f} "
          f"ieee13_aware_violations={out.get('ieee13_aware_violations', -1)}")


if __name__ == "__main__":
    main()
