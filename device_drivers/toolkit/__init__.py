"""What every driver family is built from, written once (see ``docs/devices.md``, "The driver toolkit").

- :mod:`~device_drivers.toolkit.health`: a driver's health bookkeeping (state, last error, readings);
- :mod:`~device_drivers.toolkit.rejects`: counting and logging what a driver rejected;
- :mod:`~device_drivers.toolkit.silence`: counting a device's silences, logged on transitions only;
- :mod:`~device_drivers.toolkit.commands`: the ``ping`` answer and command results;
- :mod:`~device_drivers.toolkit.serialio`: byte and line I/O over a serial port;
- :mod:`~device_drivers.toolkit.schedule`: polling on a drift-free schedule;
- :mod:`~device_drivers.toolkit.sensor`: the environment sensors' readings and polling loop.

The one clock is :mod:`storegate.clock`: every driver takes ``clock: Clock = SYSTEM_CLOCK``.
"""
