"""shelf devices."""
