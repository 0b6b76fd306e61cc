"""One base for the agent's exceptions, each still the builtin it was, so no ``except`` changes meaning."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import edge_agent
from edge_agent.errors import AgentError, AgentFailedError, AgentStoppedError, InvalidReadingError
from edge_agent.outbox import OutboxError, OutboxFullError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (AgentStoppedError, RuntimeError),
        (AgentFailedError, RuntimeError),
        (InvalidReadingError, ValueError),
        (OutboxError, Exception),
        (OutboxFullError, Exception),
    ],
)
def test_every_agent_error_is_an_agent_error_and_still_its_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, AgentError)
    assert issubclass(error, builtin)
    with pytest.raises(AgentError):
        raise error("boom")
    with pytest.raises(builtin):
        raise error("boom")


def test_every_exception_the_agent_defines_derives_from_agent_error() -> None:
    defined = [
        cls
        for module_info in pkgutil.iter_modules(edge_agent.__path__)
        for _, cls in inspect.getmembers(importlib.import_module(f"edge_agent.{module_info.name}"), inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__.startswith("edge_agent.")
    ]
    assert OutboxError in defined
    assert [cls.__qualname__ for cls in defined if not issubclass(cls, AgentError)] == []
