"""The market's input error: one type, naming the field and the value that broke the rule."""

from __future__ import annotations


class MarketInputError(ValueError):
    """Raised for bids, positions or tariffs the market cannot clear.

    The message always names the offending field and value, so a user reading a
    log line can find the bad record without a debugger.
    """

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field} = {value!r}: {rule}")
