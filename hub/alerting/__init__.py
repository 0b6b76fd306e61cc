"""Security and environment monitoring at the hub: rules in force, alerts, excursions, notifications."""
