"""The hub's Prometheus metrics, registered in a registry of their own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class HubMetrics:
    """Every metric the hub exports, all named ``storegate_hub_*``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_received = Counter(
            "storegate_hub_messages_received",
            "valid messages taken from the broker, by channel",
            ["channel"],
            registry=r,
        )
        self.rejected_messages = Counter(
            "storegate_hub_rejected_messages",
            "messages (or single events of a batch) refused, by reason",
            ["reason"],
            registry=r,
        )
        self.events_stored = Counter("storegate_hub_events_stored", "events stored for the first time", registry=r)
        self.events_duplicate = Counter(
            "storegate_hub_events_duplicate", "events received again that were already stored", registry=r
        )
        self.acks_sent = Counter("storegate_hub_acks_sent", "Ack messages handed to the MQTT client", registry=r)
        self.status_transitions = Counter(
            "storegate_hub_gateway_status_transitions",
            "gateway online/offline transitions, by state",
            ["state"],
            registry=r,
        )
        self.commit_failures = Counter(
            "storegate_hub_commit_failures",
            "transactions of the consumer that failed (nothing acknowledged)",
            registry=r,
        )
        self.batch_commit_seconds = Histogram(
            "storegate_hub_batch_commit_seconds",
            "time to store one drained unit of messages, from first statement to commit",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.batch_events = Histogram(
            "storegate_hub_transaction_events",
            "events written in one consumer transaction",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10_000),
            registry=r,
        )
        self.queue_depth = Gauge(
            "storegate_hub_consumer_queue_depth", "MQTT messages received and waiting for the consumer", registry=r
        )
        self.database_up = Gauge(
            "storegate_hub_database_up", "1 while the consumer can write to the database, else 0", registry=r
        )
        self.mqtt_connected = Gauge("storegate_hub_mqtt_connected", "1 while connected to the broker", registry=r)
