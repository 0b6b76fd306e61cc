"""One base for the hub's exceptions: every exception a hub module defines is a HubError, and hub.errors'
docstring draws each one with its module and the builtin it also derives from."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import hub
import hub.errors
from hub.errors import HubError


def hub_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of the hub (hub.migrations is not a package, so not walked)."""
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(hub.__path__, "hub."):
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == info.name and value is not HubError:
                found.append(value)
    return found


def test_every_exception_of_the_hub_is_a_hub_error() -> None:
    exceptions = hub_exceptions()
    assert len(exceptions) >= 16
    assert [e.__qualname__ for e in exceptions if not issubclass(e, HubError)] == []


def test_the_tree_in_hub_errors_names_each_exception_its_module_and_builtin() -> None:
    tree = {
        line.split()[1].split("(")[0]: line.split()
        for line in (hub.errors.__doc__ or "").splitlines()
        if line.strip().startswith(("├──", "└──"))
    }
    for exception in hub_exceptions():
        assert exception.__name__ in tree, f"{exception.__name__} is not drawn in hub.errors"
        _, declared, module, *_ = tree[exception.__name__]
        assert module == exception.__module__
        builtins = [base.__name__ for base in exception.__bases__ if base is not HubError]
        assert declared == exception.__name__ + "".join(f"({name})" for name in builtins)
    assert len(tree) == len(hub_exceptions())
