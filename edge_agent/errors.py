"""Errors the edge agent raises to its callers: one base, :class:`AgentError`, for all of them.

Each also derives from the builtin it derived from before the base existed, so an ``except``
written for that builtin catches what it caught before::

    Exception
    └── AgentError                                   (edge_agent.errors)
        ├── AgentStoppedError(AgentError, RuntimeError)     record() after the agent stopped accepting
        ├── AgentFailedError(AgentError, RuntimeError)      one of the agent's own tasks failed
        ├── InvalidReadingError(AgentError, ValueError)     a reading that makes no valid event
        ├── OutboxError(AgentError)                  (edge_agent.outbox) the outbox cannot be opened or used
        ├── OutboxFullError(AgentError)              (edge_agent.outbox) the quota is full, nothing may go
        ├── PrintJobsError(AgentError)               (edge_agent.print_jobs) the print-jobs file cannot be used
        ├── DownloadError(AgentError)                (edge_agent.updates) the hub did not give a release
        └── UploadRefusedError(AgentError)           (edge_agent.snapshots) the hub refused a still for now
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the edge agent raises (see the tree in this module's docstring)."""


class AgentStoppedError(AgentError, RuntimeError):
    """The agent no longer accepts readings: it is shutting down or has stopped."""


class InvalidReadingError(AgentError, ValueError):
    """A reading that does not make a valid wire event; it is counted and dropped, never stored."""


class AgentFailedError(AgentError, RuntimeError):
    """One of the agent's own tasks (writer, sender, ack handler, health) failed, so the agent stopped."""
