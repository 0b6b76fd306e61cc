"""door devices."""
