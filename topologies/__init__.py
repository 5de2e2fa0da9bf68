"""ocalab topologies."""
