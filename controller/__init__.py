"""ocalab controller."""
