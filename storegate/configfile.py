"""Loading TOML config files into pydantic models, with errors that name the file and the key.

The errors are written for the technician who edits the file, not for a programmer: an id rule is said
as a sentence rather than a regular expression (:data:`PATTERN_RULES`), an unknown key comes with the
nearest known one ("did you mean 'port'?"), and a list section written as one table (``[devices]`` for
``[[devices]]``) gets a hint.
"""

from __future__ import annotations

import difflib
import tomllib
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from storegate.wire import DEVICE_ID_PATTERN, SEGMENT_PATTERN

M = TypeVar("M", bound=BaseModel)

# Patterns of the config's ids, said as sentences: "String should match pattern '^[a-z0-9]...'" helps nobody.
PATTERN_RULES: Final[Mapping[str, str]] = {
    SEGMENT_PATTERN: "must be 1 to 63 characters: lower-case letters, digits, '-' and '_', "
    "beginning with a letter or a digit (e.g. 'store-0042', 'gw-1')",
    DEVICE_ID_PATTERN: "must be 1 to 128 characters: letters, digits, '.', ':', '-' and '_', "
    "beginning with a letter or a digit (e.g. 'fridge-1', 'shelf-a3')",
}
# How close a word must be to a known one to be suggested (difflib's ratio).
_SUGGEST_CUTOFF: Final = 0.6


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the known word closest to ``word``, or "" when none is close."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=_SUGGEST_CUTOFF)
    return f"; did you mean {close[0]!r}?" if close else ""


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` has one line per bad key."""

    def __init__(self, path: Path | None, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        where = str(path) if path is not None else "configuration"
        super().__init__(f"invalid {where}:\n" + "\n".join(f"  {p}" for p in problems))


def describe_validation_error(err: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One line per error: the dotted key, what is wrong in words, and the offending value.

    With ``model`` (the validated model), an unknown key is given the nearest key its section knows.
    """
    problems = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = item["msg"]
        value = item.get("input")
        if item["type"] == "extra_forbidden":
            known = _known_keys(model, item["loc"][:-1]) if model is not None else []
            message = "unknown key (check its spelling and section)" + did_you_mean(str(item["loc"][-1]), known)
        elif item["type"] == "string_pattern_mismatch":
            rule = PATTERN_RULES.get(str((item.get("ctx") or {}).get("pattern")))
            message = rule if rule is not None else message
        elif item["type"] == "list_type" and isinstance(value, dict) and item["loc"]:
            section = item["loc"][-1]
            message = (
                f"a list of entries is expected, but [{section}] is one table: "
                f"begin each entry with [[{section}]] (two brackets)"
            )
        elif item["type"] == "missing":
            message = "required, but missing: add it"
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
        raise ConfigError(path, describe_validation_error(err, model)) from err


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the section at ``loc`` of ``model`` knows (empty when the path cannot be followed)."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    options = [current] if _is_model(current) else [m for m in _members(current) if _is_model(m)]
    return [name for option in options for name in option.model_fields]


def _step(annotation: Any, part: int | str) -> Any:
    """The annotation one step down ``annotation`` by a loc part: a field, a list item or a union's tagged member."""
    annotation = _unwrap(annotation)
    if isinstance(part, int):
        args = get_args(annotation)
        return args[0] if get_origin(annotation) in (list, tuple) and args else None
    if _is_model(annotation):
        field = annotation.model_fields.get(part)
        return None if field is None else field.annotation
    for member, tags in _tagged_members(annotation):
        if part in tags:
            return member
    return None


def _unwrap(annotation: Any) -> Any:
    """``annotation`` without Annotated, and without None in an optional."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return _unwrap(rest[0])
    return annotation


def _tagged_members(annotation: Any) -> list[tuple[Any, set[str]]]:
    """A (discriminated) union's members with the tags pydantic names them by in a loc."""
    if get_origin(annotation) not in (Union, types.UnionType):
        return []
    found = []
    for arg in get_args(annotation):
        tags = set()
        if get_origin(arg) is Annotated:
            tags = {meta.tag for meta in get_args(arg)[1:] if isinstance(meta, Tag)}
        member = _unwrap(arg)
        if _is_model(member):
            tags.add(member.__name__)
        found.append((member, tags))
    return found


def _members(annotation: Any) -> list[Any]:
    return [member for member, _ in _tagged_members(_unwrap(annotation))]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
