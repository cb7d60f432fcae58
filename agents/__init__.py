"""Prosumer agents: devices, observation/action layout, reference policies."""
