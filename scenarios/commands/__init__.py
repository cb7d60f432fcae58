"""What a user runs: the CLI and the commands behind it (simulate, train, evaluate,
experiment, comparison, tuning, report, diagnose, optimum, deploy)."""
