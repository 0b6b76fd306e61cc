"""Sensirion SHT3x temperature and humidity sensors on I2C, through smbus2."""
