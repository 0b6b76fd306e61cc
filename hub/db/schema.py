"""Every table of the hub on one MetaData: import this module before comparing or creating the schema.

The models live beside the code that owns them (catalog, inventory, alerting, footfall); importing them here
registers each on ``Base.metadata``, which migrations, backups and schema tests need whole.
"""

from __future__ import annotations

import hub.alerting.models
import hub.auth.models
import hub.catalog.models
import hub.footfall.models
import hub.inventory.models
import hub.reports.schedules.models
import hub.snapshots.models
from hub.db.models import Base

MODEL_MODULES = (
    hub.alerting.models,
    hub.auth.models,
    hub.catalog.models,
    hub.footfall.models,
    hub.inventory.models,
    hub.reports.schedules.models,
)
metadata = Base.metadata
