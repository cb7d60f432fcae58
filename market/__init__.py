"""Local P2P market: supply-demand-ratio clearing and settlement (pure, no I/O)."""
