"""Footfall: entrance cameras' counts per store, camera, line and minute, and the footfall report beside sales.

``models`` holds the counts table, ``apply`` writes the counts of newly stored ``camera.footfall`` events in the
ingest transaction, ``queries`` computes visitors, checkout transactions (baskets) and conversion per store and
local hour in the database, ``api`` serves ``GET /api/v1/reports/footfall``. The rules are pure, in
:mod:`hub.domain.footfall`. See docs/reports.md, "Footfall and conversion".
"""
