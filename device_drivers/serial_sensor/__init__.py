"""Sensors that print one line per reading on a serial port."""
