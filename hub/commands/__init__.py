"""Commands from the hub to gateways: queued in the database, published over MQTT, results recorded.

A command is written as a ``commands`` row (status ``pending``) in the transaction that decides it, for
instance the one that opens a restock task, so a crash can neither send a command for something that
did not happen nor lose one that did. ``sender`` publishes pending rows on the gateway's ``commands``
topic; the gateway's result comes back on ``command_results`` and :mod:`hub.commands.status` records it,
which also updates the restock task that printed. A print job may be answered twice: ``accepted`` (stored on
the gateway, the task's print status ``queued``), then ``done`` or ``failed``; statuses only move forward.
An operator queues one for a device through :mod:`hub.commands.api` (allow-listed names, arguments
checked by :mod:`hub.commands.requests`), in the request's own transaction, and reads its result there.
"""
