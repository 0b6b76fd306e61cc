"""Ingest: what gateways send, from the MQTT message to the committed row and the Ack.

``classify`` decodes what arrives, ``unit`` stores one unit of work in a transaction, ``consumer`` drains
MQTT into units, commits them and publishes the Acks. The unit writes the event log (``eventlog``, with
the stream arithmetic of ``seqs`` and each event's device time judged by ``clock``), presence and health
(``presence``) and refused messages (``rejections``), and hands the events it stored to ``operations``,
which applies them to inventory and the monitoring rules in the same transaction.
"""
