"""The hub's HTTP API: one router per resource, dependencies in :mod:`hub.api.deps`."""
