"""The edge agent: runs on the store gateway, turns device readings into events, keeps them in a
durable SQLite outbox and forwards them to the hub over MQTT until the hub acknowledges them."""
