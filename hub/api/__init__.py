"""The hub's HTTP API: one router per resource, dependencies in :mod:`hub.api.deps`.

The read queries the routers and the console share are in :mod:`hub.api.listings`; :mod:`hub.api.checks` holds
the health checks behind ``/healthz`` and the console's overview (the console's pages are in :mod:`hub.console`).
Catalog, inventory, alerting and reports keep their routers in their own packages (``api.py``, ``*_api.py``).
"""
