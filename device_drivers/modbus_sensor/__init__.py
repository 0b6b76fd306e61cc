"""Modbus RTU temperature and humidity sensors (XY-MD02 / SHT20 class)."""
