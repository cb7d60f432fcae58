"""Scenarios, data profiles and the in-process runtime (mesa model, PettingZoo env), CLI."""
