"""The console's language of each operator (issue 16).

* ``operators.language``: the locale an operator chose in the console (``en``, ``zh_Hant``, ``zh_Hans``), kept so
  that every browser they sign in from speaks it; NULL until they choose, when the browser's languages decide.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add operators.language."""
    with op.batch_alter_table("operators") as batch:
        batch.add_column(sa.Column("language", sa.String(8), nullable=True))


def downgrade() -> None:
    """Drop operators.language."""
    with op.batch_alter_table("operators") as batch:
        batch.drop_column("language")
