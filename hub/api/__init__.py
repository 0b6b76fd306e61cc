"""The hub's HTTP API: one router per resource, dependencies in :mod:`hub.api.deps`.

The read queries the routers and the dashboard share are in :mod:`hub.api.listings`; the dashboard page is
rendered by :mod:`hub.api.dashboard` and served by :mod:`hub.api.pages`; :mod:`hub.api.checks` holds the
health checks behind ``/healthz`` and the page. Catalog, inventory, alerting and reports keep their routers
in their own packages (``api.py``, ``*_api.py``).
"""
