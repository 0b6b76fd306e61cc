"""Gateways' self-test reports: uploaded on the gateway listener, read by operators per gateway."""
