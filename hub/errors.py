"""The one base of every exception the hub defines, and their tree.

Each exception lives beside the code that raises it and derives from :class:`HubError` and from the
builtin it has always derived from, so ``except HubError`` catches whatever the hub raises on purpose
while ``except LookupError`` and the like keep their meaning::

    HubError
    ├── HubStartupError(RuntimeError)          hub.app                                   the hub could not start
    ├── BackupError                            hub.admin.backup                          a backup or restore failed
    ├── ManifestError                          hub.admin.manifest                        a backup unlike its manifest
    ├── CursorError(ValueError)                hub.api.listings                          a cursor not handed out here
    ├── LeftToWireDecode                       hub.ingest.batch_decoder                  a batch the fast path leaves
    ├── BodyTooLargeError(HTTPException)       hub.api.edge                              a request body past its limit
    ├── UnsupportedDatabaseError(RuntimeError) hub.db.dialect                            neither SQLite nor PostgreSQL
    ├── WriteGateTimeout                       hub.db.writegate                          no turn to write in time
    ├── AlertTransitionError(ValueError)       hub.domain.alerts                         a transition not allowed
    ├── AccessDenied(PermissionError)          hub.domain.access                         not signed in, or not allowed
    ├── OperatorError(ValueError)              hub.auth.operators                        a bad name, role or password
    ├── OperatorNotFoundError(LookupError)     hub.auth.operators                        no such operator or token
    ├── OperatorConflictError(RuntimeError)    hub.auth.operators                        a taken name, the last admin
    ├── UncoveredRoutesError(RuntimeError)     hub.auth.guard                            routes without an access policy
    ├── RuleSetError(ValueError)               hub.domain.rules                          invalid rules or overrides
    ├── AlertNotFoundError(LookupError)        hub.alerting.alerts_db                    no alert with that id
    ├── AlertChangedError(RuntimeError)        hub.alerting.alerts_db                    changed while being written
    ├── RuleNotFoundError(LookupError)         hub.alerting.rules_db                     no such rule or override
    ├── RulesConflictError(RuntimeError)       hub.alerting.rules_db                     a rules change cannot apply
    ├── WebhookTargetRefused(OSError)          hub.alerting.egress_policy                a webhook aimed inside
    ├── SecretKeyError                         hub.alerting.secret_box                   the webhook key is unusable
    ├── SecretUnreadable                       hub.alerting.secret_box                   a secret the key cannot open
    ├── RuleStateDecodeError(ValueError)       hub.alerting.shared_states                a rule_states row not the hub's
    ├── CsvRowsError(ValueError)               hub.catalog.csv_io                        a CSV file with bad rows
    ├── CatalogConflictError(RuntimeError)     hub.catalog.service                       an import raced a change
    ├── StockOutOfRangeError(ValueError)       hub.inventory.apply                       on hand past its column
    ├── UnknownStoreError(LookupError)         hub.inventory.replenishment_suggestions   no store profile with that id
    ├── UnknownSkuError(LookupError)           hub.inventory.replenishment_suggestions   no SKU with that id
    ├── IdentityError(ValueError)              hub.pki.identity                          not a gateway's or hub's name
    ├── PkiError(RuntimeError)                 hub.pki.authority                         the CA's files missing or wrong
    ├── InvalidGatewayError(ValueError)        hub.fleet.registry                        ids not topic segments
    ├── GatewayNotFoundError(LookupError)      hub.fleet.registry                        no such gateway in the store
    ├── AlreadyEnrolledError(RuntimeError)     hub.fleet.registry                        enrolled (and not revoked)
    ├── AlreadyRevokedError(RuntimeError)      hub.fleet.registry                        revoked already
    ├── EnrolmentError(ValueError)             hub.fleet.enrolment                       a token that cannot be made
    ├── TokenNotFoundError(LookupError)        hub.fleet.enrolment                       no enrolment token of that id
    ├── TokenRefusedError(PermissionError)     hub.fleet.enrolment                       forged, expired, used, revoked
    ├── CsrError(ValueError)                   hub.fleet.enrolment                       a CSR the hub will not sign
    ├── ReportPeriodError(ValueError)          hub.reports.queries                       a report period not acceptable
    ├── DeliveryError                          hub.reports.schedules.delivery            a scheduled report not sent
    ├── ReportNotFoundError(LookupError)       hub.reports.documents                     a report of an unknown store
    ├── ReportScopeError(PermissionError)      hub.reports.documents                     a store outside the reader's
    ├── BundleTooLargeError(ValueError)        hub.reports.documents                     a bundle past its store limit
    ├── SnapshotRefusedError(ValueError)       hub.snapshots.store                       an upload that is no still
    └── LiveFullError(RuntimeError)            hub.console.live                          no room for another live page

This module imports nothing, so every part of the hub can derive from it, the pure ``hub.domain`` included.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every exception the hub defines."""
