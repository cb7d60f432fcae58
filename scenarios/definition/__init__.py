"""What a scenario is: the schema, the loader, agent placement, the load and PV profiles,
the checks a run's records must pass."""
