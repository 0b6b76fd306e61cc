"""Declarative device profiles, shipped as package data (one file per device model)."""
