"""Loading TOML config files into pydantic models, with errors that name the file and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` has one line per bad key."""

    def __init__(self, path: Path | None, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        where = str(path) if path is not None else "configuration"
        super().__init__(f"invalid {where}:\n" + "\n".join(f"  {p}" for p in problems))


def describe_validation_error(err: ValidationError) -> list[str]:
    """One line per error: the dotted key, what is wrong, and the offending value."""
    problems = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and section)"
        value = item.get("input")
        shown = "" if item["type"] in {"missing", "extra_forbidden"} or isinstance(value, dict) else f" (got {value!r})"
        if "secret" in key or "password" in key:
            shown = ""
        problems.append(f"{key}: {message}{shown}")
    return problems


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning unreadable or malformed files into ConfigError."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except OSError as err:
        raise ConfigError(path, [f"cannot read: {err.strerror}"]) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, [f"not valid TOML: {err}"]) from err


def load_model(model: type[M], path: Path) -> M:
    """Validate a TOML file against ``model``; every problem names its key."""
    data = read_toml(path)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(path, describe_validation_error(err)) from err
