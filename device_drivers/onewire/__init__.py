"""1-Wire temperature probes (DS18B20) read through the Linux w1 sysfs interface."""
