"""Field provisioning: what a technician uses to set up a store gateway."""
