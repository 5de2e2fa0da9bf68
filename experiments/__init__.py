"""ocalab experiments."""
