"""Formats and constants that appliances and the controller share: deployment, tiers, ports, steering."""
