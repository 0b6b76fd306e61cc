"""Security and environment monitoring at the hub: rules in force, alerts, excursions, notifications.

``monitoring`` runs the pure rules of :mod:`hub.domain.rules` on what the hub stores; ``rules_db`` keeps the
chain's rules and the stores' overrides, ``alerts_db`` the alerts and their history. A transition is told to
the outside world by ``notifications``: the notice and its MQTT alert topic in ``notices``, signed HTTP
deliveries in ``webhooks``, their settings in ``notification_settings``; where webhooks may connect in
``egress_policy`` (pure) and ``egress`` (DNS, the pinned transport), their secrets encrypted in ``secret_box``.
``alerts_api``, ``rules_api`` and ``webhooks_api`` are the routes.
"""
