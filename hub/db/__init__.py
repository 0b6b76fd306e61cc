"""The hub's storage: SQLAlchemy models, the async engine and the Alembic migrations that create them."""
