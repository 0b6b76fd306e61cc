"""The hub: consumes gateway events from MQTT, stores them idempotently, acknowledges them, and
serves the API and dashboard for ops staff.

Grouped by what it does: ``ingest`` (from MQTT to the committed row and the Ack), ``db`` (models, engine,
migrations), ``domain`` (pure rules and calculations), ``inventory``, ``catalog``, ``alerting``,
``reports``, ``commands`` (to gateways), ``api`` (routes, shared queries, the page, health checks) and
``admin`` (backup and restore). The top level composes them: ``app``, ``runtime``, ``runner``,
``settings``, ``metrics`` and ``errors``.
"""
