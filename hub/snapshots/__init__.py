"""Camera stills from the gateways: received over the gateway listener (client certificates only), kept on disk
for ``retention_days``, and served to the operators whose role may see evidence (docs/snapshots.md)."""
