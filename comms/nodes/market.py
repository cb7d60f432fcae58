"""The market-operator process: the round clock, bids with a deadline, SDR clearing.

Each round: send ``round_start`` to every prosumer; collect bids until all have arrived
or ``bid_deadline_ms`` passes; clear the bids that arrived (an agent without a bid
trades only with the grid that round and the log says so); send each bidder its
settlement and the grid operator the positions; wait for the grid's ``round_done`` and
the prosumers' ``round_done`` (or their timeouts); write the market row. As the round
of an injected crash begins, send that prosumer a ``crash`` control message; before a
round at which a killed prosumer is restarted, wait for its ``hello``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from peergrid.comms.deployment import Deployment
from peergrid.market.bid import Bid
from peergrid.comms.runtime import open_node
from peergrid.market.operator import MarketResult
from peergrid.market.sdr import Tariff
from peergrid.market.settlement import Settlement, grid_only_settlement


def run_market(dep: Deployment) -> None:
    from peergrid.market.operator import MarketOperator
    from peergrid.scenarios.community import Clock, market_row
    from peergrid.scenarios.logs import RunWriter

    scenario, node = open_node(dep, "market")
    d = scenario.deploy
    clock = Clock(scenario, dep.days)
    retail, feed_in = scenario.tariff.hourly()
    market = MarketOperator(retail, feed_in)
    agents = list(dep.agents)
    restarts = {k.restart_round: k.agent for k in d.kills if k.restart_round is not None}
    down: set[str] = set()
    kills = {k.at_round: k.agent for k in d.kills}
    writer = RunWriter(Path(dep.out))
    incarnation: dict[str, int] = {}  # latest hello per peer (0 = first start)
    killed_incarnation: dict[str, int] = {}

    def wait_for(names: set[str], kind: str, k: int | None, timeout_s: float,
                 store: dict | None = None, min_incarnation: int = 0) -> set[str]:
        got: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if kind == "hello":
                got = {n for n in names if incarnation.get(n, -1) >= min_incarnation}
            if not names - got:
                break
            for h, body in node.receive(deadline - time.monotonic()):
                if h.kind == "hello":
                    incarnation[h.sender] = max(incarnation.get(h.sender, -1), h.episode)
                    node.log.event("hello", peer=h.sender, incarnation=h.episode,
                                   pid=body["pid"])
                elif h.kind == "resend":
                    resend(h, body)
                elif h.kind == kind and (k is None or clock.episode_round(k) == (h.episode, h.round)):
                    got.add(h.sender)
                    if store is not None:
                        store[h.sender] = body
                else:
                    node.log.event("late", peer=h.sender, kind=h.kind, episode=h.episode,
                                   round=h.round)
        if kind == "hello":
            got = {n for n in names if incarnation.get(n, -1) >= min_incarnation}
        return got

    settled: dict[int, dict[str, dict]] = {}

    def resend(h, body) -> None:
        """An agent's settlement was lost (or its bid came late): send it (again)."""
        k = body["k"]
        if k >= node.global_round and k not in settled:  # the round being collected
            # not cleared yet: its bid may still count, and the settlement will follow;
            # a grid-only answer now would contradict the clearing (and the original
            # settlement would then be dropped as a duplicate)
            node.log.event("resend_early", peer=h.sender, k=k, attempt=body["attempt"])
            return
        s = settled.get(k, {}).get(h.sender)
        if s is None:  # never cleared with this agent's bid: it traded with the grid only
            hour = int(clock.hours[k])
            tariff = Tariff(retail[hour], feed_in[hour])
            s = settlement_body(grid_only_settlement(body["surplus_kwh"], tariff, float("nan")),
                                tariff, traded=False)
        node.log.event("resend", peer=h.sender, k=k, attempt=body["attempt"],
                       traded=s["traded"])
        node.send(h.sender, "settlement", h.episode, h.round, s)

    missing = {*agents, "grid"} - wait_for({*agents, "grid"}, "hello", None, 120.0)
    if missing:
        node.log.event("start_without", peers=sorted(missing))
    round_done_s = d.signal_timeout_ms / 1e3 * 7  # an agent may ask 5 times for a resend
    for k in range(clock.n_rounds):
        node.global_round = k
        episode, rnd = clock.episode_round(k)
        if k in kills:  # the injected crash, as a control message no network fault can lose
            node.send(kills[k], "crash", episode, rnd, {"k": k}, control=True)
            down.add(kills[k])
            killed_incarnation[kills[k]] = incarnation.get(kills[k], 0)
        if k in restarts:
            agent = restarts[k]
            got = wait_for({agent}, "hello", None, 60.0,
                           min_incarnation=killed_incarnation.get(agent, 0) + 1)
            node.log.event("restart_wait", agent=agent, arrived=bool(got))
            down.discard(agent)
        live = [a for a in agents if a not in down]
        for a in agents:  # a killed agent is sent round_start too: the network cannot know
            node.send(a, "round_start", episode, rnd, {
                "k": k, "deadline_s": d.bid_deadline_ms / 1e3, "sent_at": time.time()})
        bodies: dict[str, dict] = {}
        got = wait_for(set(agents), "bid", k, d.bid_deadline_ms / 1e3, bodies)
        no_bid = sorted(set(agents) - got)
        bids = {a: Bid(a, bodies[a]["bus"], rnd, bodies[a]["bid_kwh"], bodies[a]["surplus_kwh"],
                       bodies[a]["q_kvar"], bodies[a]["volt_var_kva"], bodies[a]["q_max_kvar"])
                for a in agents if a in bodies}
        result = market.close_round(rnd, int(clock.hours[k]), bids)
        tariff = result.clearing.tariff
        settled[k] = {}
        for a, s in result.settlements.items():
            settled[k][a] = settlement_body(s, tariff, traded=True, market=result)
            node.send(a, "settlement", episode, rnd, settled[k][a])
        settled.pop(k - 2, None)
        node.send("grid", "positions", episode, rnd, {
            "k": k, "surplus_kwh": {a: b.surplus_kwh for a, b in bids.items()},
            "q_kvar": {a: b.q_kvar for a, b in bids.items()},
            "volt_var_kva": {a: b.volt_var_kva for a, b in bids.items()},
            "q_max_kvar": {a: b.q_max_kvar for a, b in bids.items()},
            "bus": {a: b.bus for a, b in bids.items()},
        })
        key = {"episode": episode, "round": rnd, "time": clock.times[k].isoformat()}
        writer.write_row("market.jsonl", {**market_row(key, result), "bids_missing": no_bid})
        node.log.event("round", k=k, episode=episode, round=rnd, bids=len(bids),
                       bids_missing=no_bid, down=sorted(down))
        day_end = rnd == clock.steps_per_day - 1
        wait_s = round_done_s + (_update_allowance(scenario, dep) if day_end else 0.0)
        # agents whose bid missed the clearing traded with the grid only whatever they do
        # next, and a later resend is still answered: the round need not wait for them
        waiting = {*(a for a in live if a in bids), "grid"}
        done = wait_for(waiting, "round_done", k, wait_s)
        if waiting - done:
            node.log.event("round_done_missing", k=k, peers=sorted(waiting - done))
    for peer in (*agents, "grid"):
        node.send(peer, "stop", -1, -1, {}, control=True)
    node.log.event("links", counters=node.link_counters())
    writer.close()
    node.close()


def settlement_body(s: Settlement, tariff: Tariff, traded: bool,
                    market: MarketResult | None = None) -> dict:
    """The wire body of a settlement: its fields, the round's tariff, whether it traded,
    and the clearing's public totals (agents.public; NaN when the agent did not trade)."""
    c = market.clearing if market is not None else None
    return {**asdict(s), "retail_price": tariff.retail_price_per_kwh,
            "feed_in_price": tariff.feed_in_price_per_kwh, "traded": traded,
            "tsp_kwh": c.tsp_kwh if c else float("nan"),
            "tbp_kwh": c.tbp_kwh if c else float("nan"),
            "net_import_kwh": market.net_import_kwh if market else float("nan")}


def _update_allowance(scenario, dep: Deployment) -> float:
    """Extra wait at a day's end while learners update (and exchange critics)."""
    if not dep.learners:
        return 0.0
    return 5.0 + scenario.algo.epochs * scenario.deploy.consensus_timeout_ms / 1e3
