"""Errors the edge agent raises to its callers."""

from __future__ import annotations


class AgentStoppedError(RuntimeError):
    """The agent no longer accepts readings: it is shutting down or has stopped."""


class InvalidReadingError(ValueError):
    """A reading that does not make a valid wire event; it is counted and dropped, never stored."""


class AgentFailedError(RuntimeError):
    """One of the agent's own tasks (writer, sender, ack handler, health) failed, so the agent stopped."""
