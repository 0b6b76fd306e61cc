"""The hub: consumes gateway events from MQTT, stores them idempotently, acknowledges them, and
serves the API and dashboard for ops staff."""
