"""Formats and constants that appliances and the controller share: catalog spec, deployment, tiers, ports, steering."""
