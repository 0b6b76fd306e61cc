"""What every environment sensor shares: per-device settings, stale-sensor detection and local alarms."""
