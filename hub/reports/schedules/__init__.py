"""Scheduled reports: a report rendered for a past period and delivered by webhook and e-mail (docs/reports.md).

* :mod:`.timing` (pure): when a schedule fires next, which period a run reports, how many missed runs to catch up.
* :mod:`.kinds`: the registry of report kinds (name → formats → renderer) a schedule may name.
* :mod:`.models`: the ``report_schedules`` and ``report_deliveries`` tables (migration 0014).
* :mod:`.delivery`: the signed webhook POST and the e-mail with the report attached.
* :mod:`.runner`: the background task that plans due runs, claims deliveries, sends them and retries.
* :mod:`.api`: ``/api/v1/report-schedules`` for admins.
"""
