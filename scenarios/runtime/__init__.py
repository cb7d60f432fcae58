"""How a scenario runs in one process: the community (the stages of a round), the mesa
model, the PettingZoo env, run directories."""
