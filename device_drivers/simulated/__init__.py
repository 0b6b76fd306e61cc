"""Simulated devices: deterministic stand-ins for real hardware, for demos, tests and benchmarks."""
