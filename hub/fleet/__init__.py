"""The gateway registry: which gateways (store, gateway) may send to the hub, who enrolled and revoked them.

:mod:`hub.fleet.registry` enrols, revokes, lists and admits; :mod:`hub.fleet.api` is its HTTP API; the
``storegate hub gateways`` commands (launcher/cli.py) call the same functions.
"""
