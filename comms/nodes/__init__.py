"""The node processes of a deployment: thin loops around the actors."""
