"""Distribution feeders, power flow and voltage penalties (no market prices, no torch)."""
