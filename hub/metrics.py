"""The hub's Prometheus metrics, registered in a registry of their own (one per app)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hub.ingest.clock import ClockIssue
from storegate import wire
from storegate.service_metrics import register_service_metrics

LOSS_REASONS: Final[tuple[str, ...]] = get_args(wire.DataLoss.model_fields["reason"].annotation)
_GATEWAY_LABELS: Final = ["store", "gateway"]
CLOCK_ISSUES: Final = tuple(issue.value for issue in ClockIssue)


class HubMetrics:
    """Every metric the hub exports, named ``storegate_hub_*``, with the build info and process metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        register_service_metrics(r, "hub")
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
        self.refused_events = Counter(
            "storegate_hub_refused_events",
            "events of enrolled gateways' batches set aside (kept in refused_events, the rest stored), by reason",
            ["reason"],
            registry=r,
        )
        for reason in ("invalid_event", "not_of_sender", "storage_error"):  # every series from the start
            self.refused_events.labels(reason=reason)
        self.api_refused = Counter(
            "storegate_hub_api_refused",
            "HTTP requests answered 4xx (bad Host, body too large, invalid or out-of-range values...), by status",
            ["status"],
            registry=r,
        )
        self.events_stored = Counter("storegate_hub_events_stored", "events stored for the first time", registry=r)
        self.events_lost = Counter(
            "storegate_hub_events_lost",
            "events that gateways reported lost (outbox.loss), less those held or recorded before, by reason",
            ["reason"],
            registry=r,
        )
        for reason in LOSS_REASONS:  # every series from the start, so rate() and alerts see the first loss
            self.events_lost.labels(reason=reason)
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
        # One series per gateway (bounded by the fleet), from each gateway's latest GatewayHealth.
        self.gateway_backlog = Gauge(
            "storegate_hub_gateway_backlog_events",
            "events in the gateway's outbox not yet acknowledged by the hub",
            _GATEWAY_LABELS,
            registry=r,
        )
        self.gateway_oldest_unacked = Gauge(
            "storegate_hub_gateway_oldest_unacked_seconds",
            "age of the oldest event in the gateway's outbox (0 when empty)",
            _GATEWAY_LABELS,
            registry=r,
        )
        self.gateway_evicted = Gauge(
            "storegate_hub_gateway_evicted_events",
            "events the gateway evicted from its full outbox since it started (its evicted_total)",
            _GATEWAY_LABELS,
            registry=r,
        )
        self.gateway_health_timestamp = Gauge(
            "storegate_hub_gateway_health_timestamp_seconds",
            "when the gateway wrote its latest health report (Unix time, its clock): alert when it grows old",
            _GATEWAY_LABELS,
            registry=r,
        )
        # One series per gateway and issue (bounded by the fleet: only enrolled gateways' events are stored).
        self.events_clock_suspect = Counter(
            "storegate_hub_events_clock_suspect",
            "events stored with a device time the hub does not believe (a gateway clock off), by gateway and issue",
            [*_GATEWAY_LABELS, "issue"],
            registry=r,
        )
        # What the hub made of the events (hub/ingest/operations.py).
        self.ledger_movements = Counter(
            "storegate_hub_ledger_movements", "stock movements written to the ledger", ["kind"], registry=r
        )
        self.unplaced_events = Counter(
            "storegate_hub_unplaced_events", "events that should move stock but could not be placed", registry=r
        )
        self.restock_tasks = Counter(
            "storegate_hub_restock_tasks", "restock tasks opened and closed", ["action"], registry=r
        )
        self.footfall_periods = Counter(
            "storegate_hub_footfall_periods",
            "entrance cameras' footfall periods: counted, or not counted for a time the hub does not believe",
            ["outcome"],
            registry=r,
        )
        self.alert_signals = Counter(
            "storegate_hub_alert_signals",
            "rule signals and what they did to alerts (opened, repeated, resolved, ignored)",
            ["effect"],
            registry=r,
        )
        self.alert_escalations = Counter(
            "storegate_hub_alert_escalations", "alerts escalated for want of an acknowledgement", registry=r
        )
        self.shrink_records = Counter(
            "storegate_hub_shrink_records", "shrink records: picks not sold within the window", registry=r
        )
        self.rule_observations_rejected = Counter(
            "storegate_hub_rule_observations_rejected",
            "observations a rule refused (e.g. a reading older than the zone's last one)",
            registry=r,
        )
        self.operations_failures = Counter(
            "storegate_hub_operations_failures",
            "units whose events were stored but could not be applied (a bug: see unplaced_events)",
            registry=r,
        )
        self.api_database_unavailable = Counter(
            "storegate_hub_api_database_unavailable",
            "API requests answered 503 because the database could not answer (unreachable, or busy past its timeout)",
            registry=r,
        )
        self.write_turn_wait_seconds = Histogram(
            "storegate_hub_write_turn_wait_seconds",
            "on SQLite, time a writer of the hub waited for its turn at the database's write lock, by writer",
            ["writer"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        # The histogram above learns of a wait only when it ends: a writer stuck inside its turn shows here.
        self.write_turn_held_seconds = Gauge(
            "storegate_hub_write_turn_held_seconds",
            "on SQLite, how long the current holder of the database's write turn has held it (0 when free)",
            registry=r,
        )
        # N workers on a shared subscription (hub.ingest.shared; docs/scaling.md).
        self.store_lock_wait_seconds = Histogram(
            "storegate_hub_store_lock_wait_seconds",
            "shared mode: time a unit or a tick waited for its stores' advisory locks (another worker held one)",
            ["holder"],
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.store_locks_busy = Counter(
            "storegate_hub_store_locks_busy",
            "shared mode: stores a unit found locked by another worker; their messages went to its next unit",
            registry=r,
        )
        self.leader = Gauge(
            "storegate_hub_leader",
            "shared mode: 1 while this worker is the leader (rules ticker, command and notification senders)",
            registry=r,
        )
        self.rule_states_loaded = Counter(
            "storegate_hub_rule_states_loaded",
            "shared mode: stores whose rule states were read again because another worker changed them",
            registry=r,
        )
        self.events_held_for_order = Counter(
            "storegate_hub_events_held_for_order",
            "shared mode: events stored above a gap of their stream, applied once the gap is filled",
            registry=r,
        )
        self.rules_tick_failures = Counter(
            "storegate_hub_rules_tick_failures", "rule ticks that failed (the database was away)", registry=r
        )
        self.rules_not_in_force = Gauge(
            "storegate_hub_rules_not_in_force",
            "stored rules or store overrides that are invalid and skipped",
            registry=r,
        )
        self.webhook_urls_refused = Counter(
            "storegate_hub_webhook_urls_refused",
            "webhooks refused when created: a user name or password in the URL, or a host that is or resolves to "
            "an address that is not public and not allow-listed",
            registry=r,
        )

        # Scheduled reports (hub.reports.schedules).
        self.report_deliveries = Counter(
            "storegate_hub_report_deliveries",
            "scheduled report attempts by channel (webhook, email) and outcome: delivered, retry (failed, tried "
            "again later), failed (gave up), cancelled (schedule paused or deleted)",
            ["channel", "outcome"],
            registry=r,
        )
        for channel in ("webhook", "email"):
            for outcome in ("delivered", "retry", "failed", "cancelled"):
                self.report_deliveries.labels(channel=channel, outcome=outcome)
        self.report_runs_skipped = Counter(
            "storegate_hub_report_runs_skipped",
            "scheduled report runs missed during downtime beyond reports.max_catch_up, not sent",
            registry=r,
        )
        self.report_schedules_failing = Gauge(
            "storegate_hub_report_schedules_failing",
            "report schedules whose last reports.failing_after deliveries all failed",
            registry=r,
        )

        # Rollouts of agent releases (hub.releases): each gateway's outcome, and rollouts halted.
        self.update_outcomes = Counter(
            "storegate_hub_update_outcomes",
            "gateways' outcomes in rollouts of agent releases: done, failed (rolled back, refused or silent)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("done", "failed"):
            self.update_outcomes.labels(outcome=outcome)
        self.rollouts_halted = Counter(
            "storegate_hub_rollouts_halted",
            "rollouts halted past their failure threshold: see their reason",
            registry=r,
        )
        # Enrolment by token and certificate renewal (hub.fleet.enrolment, hub.fleet.renewal).
        self.enrolments = Counter("storegate_hub_enrolments", "gateways enrolled with a one-time token", registry=r)
        self.enrolments_refused = Counter(
            "storegate_hub_enrolments_refused",
            "enrolment attempts refused, by reason: forged, expired, used, revoked, gateway_enrolled, bad_csr",
            ["reason"],
            registry=r,
        )
        self.certificate_renewals = Counter(
            "storegate_hub_certificate_renewals",
            "gateway certificate renewals, by outcome: renewed, refused (revoked or unknown gateway), bad_csr",
            ["outcome"],
            registry=r,
        )

        # Operators (hub.auth): refusals, sign-ins, the audit log.
        self.access_refused = Counter(
            "storegate_hub_access_refused",
            "API requests refused: 401 (no or bad credentials), 403 (role, store scope or CSRF), by status and cause",
            ["status", "cause"],
            registry=r,
        )
        self.logins = Counter(
            "storegate_hub_logins",
            "sign-ins by outcome: succeeded, failed (wrong name or password), throttled (locked for a while)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("succeeded", "failed", "throttled"):
            self.logins.labels(outcome=outcome)
        self.audit_write_failures = Counter(
            "storegate_hub_audit_write_failures",
            "audit log entries that could not be written (the database was away): investigate",
            registry=r,
        )

    def watch_write_turn(self, held_for: Callable[[], float | None]) -> None:
        """Read the write turn's current holding time at each scrape (hub.db.writegate's ``held_for``)."""
        self.write_turn_held_seconds.set_function(lambda: held_for() or 0.0)

    def observe_write_turn(self, writer: str, seconds: float) -> None:
        """How long ``writer`` waited for its turn to write (hub.db.writegate)."""
        self.write_turn_wait_seconds.labels(writer=writer).observe(seconds)

    def observe_gateway_health(self, health: wire.GatewayHealth) -> None:
        """Set the per-gateway gauges from a health report: one series per gateway, which is (store, gateway)."""
        labels = {"store": health.store_id, "gateway": health.gateway_id}
        self.gateway_backlog.labels(**labels).set(health.outbox_depth)
        self.gateway_oldest_unacked.labels(**labels).set(health.oldest_unacked_age_s or 0.0)
        self.gateway_evicted.labels(**labels).set(health.evicted_total)
        self.gateway_health_timestamp.labels(**labels).set(health.ts.timestamp())

    def count_clock_suspects(self, store_id: str, gateway_id: str, issue: str, count: int) -> None:
        """Count events of a gateway stored with a device time the hub does not believe (hub.ingest.clock)."""
        self.events_clock_suspect.labels(store=store_id, gateway=gateway_id, issue=issue).inc(count)

    def forget_gateway(self, store_id: str, gateway_id: str) -> None:
        """Remove a gateway's series (when it is revoked)."""
        for issue in CLOCK_ISSUES:
            with contextlib.suppress(KeyError):  # none of its events had this issue: no series
                self.events_clock_suspect.remove(store_id, gateway_id, issue)
        for gauge in (
            self.gateway_backlog,
            self.gateway_oldest_unacked,
            self.gateway_evicted,
            self.gateway_health_timestamp,
        ):
            with contextlib.suppress(KeyError):  # no health report yet: no series
                gauge.remove(store_id, gateway_id)
