"""The hub's database: models, the async engine, dialect helpers, migrations, checkpoints and write turns.

``models`` and ``schema`` (every table on one MetaData), ``engine`` (SQLite or PostgreSQL, tuned), the
helpers that make one statement work on both (``dialect``, ``bulk``, ``sqlfunctions``, ``overlap``),
``migrate`` (Alembic from code), ``checkpoint`` (SQLite's WAL in the background) and ``writegate`` (turns
at SQLite's one write lock). Nothing here imports the packages above it, except that ``schema`` collects
their models.
"""
