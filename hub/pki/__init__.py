"""The hub as the gateways' certificate authority, and the broker configuration it writes.

- :mod:`hub.pki.identity`: who a certificate names: a gateway ``<store>/<gateway>`` or a hub (pure).
- :mod:`hub.pki.authority`: the CA under ``secrets_dir/pki``: keys, certificates, the index and the CRL.
- :mod:`hub.pki.broker`: the Mosquitto configuration and ACL rendered from the gateways (pure), written
  atomically next to the CA's files, and the running broker told to reload.
- :mod:`hub.pki.commands`: what ``storegate hub pki ...`` and ``storegate hub broker-config`` run.
"""
