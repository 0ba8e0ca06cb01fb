"""HTTP routes, one blueprint per module."""
