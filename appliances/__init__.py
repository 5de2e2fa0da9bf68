"""ocalab appliances."""
