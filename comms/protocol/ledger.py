"""The market operator's ledger: what it cleared with whom, until each agent has booked it.

The ledger is the authority on trades. A prosumer books a round from the market's
answer, never from a guess: when a settlement is lost it asks (``resend``) until the
answer comes, and a prosumer restarted after a crash asks for the round it had bid in
before dying. So P2P sold = P2P bought in every round across the records, whatever was
lost. The answer for an agent whose bid missed the clearing is a grid-only settlement
that still carries the round's public totals (its SDR and prices are the round's, not
an earlier one's).

Entries are kept until the agent confirms (``round_done`` for that round or a later one);
an agent that never confirms keeps at most ``keep_rounds`` entries, and the public
summary of a round (for grid-only answers) is kept for ``keep_rounds`` rounds: the
ledger, which a market checkpoints every round, does not grow with the run.
"""

from __future__ import annotations

from peergrid.comms.messages import SettlementMessage
from peergrid.market.operator import MarketResult
from peergrid.market.sdr import Tariff
from peergrid.market.settlement import grid_only_settlement
from peergrid.agents.statefile import state_class


@state_class  # in a node checkpoint (agents.statefile)
class MarketLedger:
    def __init__(self, agents: list[str], keep_rounds: int = 1000) -> None:
        self.agents = list(agents)
        self.keep_rounds = keep_rounds
        self.rounds: dict[int, tuple[Tariff, float]] = {}
        """Each round's tariff and SDR: what a grid-only answer needs."""
        self.open: dict[str, dict[int, SettlementMessage]] = {a: {} for a in agents}
        self.confirmed: dict[str, int] = {a: -1 for a in agents}

    def book(self, k: int, result: MarketResult) -> dict[str, SettlementMessage]:
        """Enter round ``k``'s clearing; the settlements to send."""
        c = result.clearing
        self.rounds[k] = (c.tariff, c.sdr)
        self.rounds.pop(k - self.keep_rounds, None)
        out = {}
        for agent, s in result.settlements.items():
            out[agent] = SettlementMessage.of(k, s, c.tariff, traded=True, market=result)
            entries = self.open[agent]
            entries[k] = out[agent]
            while len(entries) > self.keep_rounds:
                entries.pop(min(entries))
        return out

    def answer(self, agent: str, k: int, surplus_kwh: float) -> SettlementMessage | None:
        """What ``agent`` is owed for round ``k``; None while ``k`` is not cleared."""
        if k in self.open.get(agent, {}):
            return self.open[agent][k]
        if k not in self.rounds:
            return None
        tariff, sdr = self.rounds[k]
        # the round's SDR and prices are public: the agent hears them even though it
        # did not take part (the totals stay NaN)
        s = grid_only_settlement(surplus_kwh, tariff, sdr)
        return SettlementMessage.of(k, s, tariff, traded=False)

    def confirm(self, agent: str, k: int) -> None:
        """``agent`` has booked every round up to ``k``."""
        if agent not in self.open:
            return
        self.confirmed[agent] = max(self.confirmed[agent], k)
        for j in [j for j in self.open[agent] if j <= k]:
            del self.open[agent][j]

    def unconfirmed(self, agent: str) -> list[int]:
        return sorted(self.open.get(agent, {}))
