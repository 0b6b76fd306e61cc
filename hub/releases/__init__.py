"""Gateway software updates: releases (checked wheels of the agent software) and rollouts that offer them in stages.

:mod:`hub.releases.store` checks and keeps the wheels, :mod:`hub.releases.plan` is the pure core of a rollout (stage
sizes, the next step), :mod:`hub.releases.runner` is the leader-only loop that sends ``update`` commands and reads
their outcomes, :mod:`hub.releases.api` the operators' routes and :mod:`hub.releases.gateway_api` the gateways'.
docs/updates.md tells the whole story.
"""
