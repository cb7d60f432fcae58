"""The grid operator's side of a round: positions in, power flow, voltages out.

On ``positions`` for round k: solve the power flow with every agent's position (an
agent whose position did not reach the market still draws power: its last known one is
used and the row names it ``estimated``), send every prosumer its ``grid_signal`` and the
market ``round_done``, write the grid row, checkpoint. The same positions again (the
market's retry) are answered again, not solved twice. A round whose positions never
came gets its row anyway, flagged ``positions_lost`` (voltages unknown), when a later
round's positions or the ``stop`` show it was skipped (or, for a grid down at the end,
its ``finish`` run): every round has one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from peergrid.comms.messages import Heartbeat, Hello, Message, Positions, RoundDone, Stop, VoltageReport
from peergrid.comms.protocol.effects import Effects
from peergrid.comms.protocol.market import Window
from peergrid.grid.operator import GridOperator, grid_row
from peergrid.market.bid import Bid


@dataclass
class GridState:
    next_k: int = 0
    last: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    """Each agent's last known (surplus_kwh, q_kvar, volt_var_kva, q_max_kvar)."""
    rows: int = 0


class GridProtocol:
    def __init__(self, agents: Sequence[str], buses: dict[str, str], window: Window,
                 operator: GridOperator, idle_exit_s: float = float("inf"),
                 state: GridState | None = None, incarnation: int = 0, pid: int = 0) -> None:
        self.incarnation, self.pid = incarnation, pid
        self.agents, self.buses, self.window, self.grid = list(agents), buses, window, operator
        self.s = state or GridState(last={a: (0.0, 0.0, 0.0, 0.0) for a in self.agents})
        self.fx = Effects()
        self.finished = False
        self.exit_reason = ""
        self.idle_exit_s = idle_exit_s
        self.last_heard = 0.0
        self._sent: dict[str, VoltageReport] = {}

    def start(self, now: float) -> Effects:
        self.last_heard = now
        if self.incarnation > 0:
            self.fx.log("resumed", from_round=self.s.next_k, incarnation=self.incarnation)
        self.fx.send("market", Hello(self.pid, self.incarnation, self.s.next_k))
        return self.fx.take()

    def on_message(self, now: float, sender: str, episode: int, rnd: int,
                   msg: Message) -> Effects:
        if sender == "market":
            self.last_heard = now
        if isinstance(msg, Heartbeat):
            pass
        elif isinstance(msg, Stop) and sender == "market":
            self._write_lost(self.window.n_rounds)
            self.finished, self.exit_reason = True, "stop"
        elif isinstance(msg, Positions) and sender == "market":
            self._solve(msg, episode, rnd)
        else:
            self.fx.log("unexpected", peer=sender, kind=msg.kind)
        return self.fx.take()

    def finish(self) -> Effects:
        """The run is over and this grid was down at its end (it never got the market's
        ``stop``): the rounds it did not see get their rows, as on ``stop``."""
        self._write_lost(self.window.n_rounds)
        self.finished, self.exit_reason = True, "finished"
        return self.fx.take()

    def on_tick(self, now: float) -> Effects:
        if now - self.last_heard > self.idle_exit_s:  # its market is gone
            self.finished, self.exit_reason = True, "market_silent"
        return self.fx.take()

    def next_due(self) -> float:
        return self.last_heard + self.idle_exit_s

    @property
    def current_round(self) -> int:
        """The round of the positions being answered (link faults follow it)."""
        return max(self.s.next_k - 1, 0)

    def _write_lost(self, until: int) -> None:
        while self.s.next_k < until:
            j = self.s.next_k
            self.fx.write("grid.jsonl", {**self.window.key(j), "converged": False,
                                         "positions_lost": True})
            self.fx.log("round", k=j, positions_lost=True)
            self.s.next_k, self.s.rows = j + 1, self.s.rows + 1
        self.fx.checkpoint = self.s

    def _solve(self, msg: Positions, episode: int, rnd: int) -> None:
        k = msg.k
        if k == self.s.next_k - 1 and self._sent:  # a retry: answer again, no new solve
            for a, report in self._sent.items():
                self.fx.send(a, report, episode, rnd)
            self.fx.send("market", RoundDone(k), episode, rnd)
            return
        if k < self.s.next_k or k >= self.window.n_rounds:
            self.fx.log("late", peer="market", kind=msg.kind, k=k)
            return
        self._write_lost(k)
        episode, rnd = self.window.episode_round(k)
        known = [a for a in self.agents if a in msg.surplus_kwh]
        for a in known:
            self.s.last[a] = (msg.surplus_kwh[a], msg.q_kvar.get(a, 0.0),
                              msg.volt_var_kva.get(a, 0.0), msg.q_max_kvar.get(a, 0.0))
        bids = {a: Bid(a, self.buses[a], rnd, 0.0, *self.s.last[a]) for a in self.agents}
        signal = self.grid.solve(rnd, bids)
        self._sent = {a: VoltageReport(
            k, signal.vm_pu, signal.converged, {a: signal.voltage_penalty[a]},
            {a: signal.line_penalty[a]},
            {x: q for x, q in signal.volt_var_q_kvar.items() if x == a},
            signal.max_line_loading_pct) for a in self.agents}
        for a, report in self._sent.items():
            self.fx.send(a, report, episode, rnd)
        self.fx.send("market", RoundDone(k), episode, rnd)
        estimated = [a for a in self.agents if a not in known]
        self.fx.write("grid.jsonl", {**grid_row(self.window.key(k), signal, self.grid),
                                     "estimated": estimated})
        self.fx.log("round", k=k, estimated=estimated, converged=signal.converged)
        self.s.next_k, self.s.rows = k + 1, self.s.rows + 1
        self.fx.checkpoint = self.s
