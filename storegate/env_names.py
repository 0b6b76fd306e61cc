"""Environment variables that name no setting: refused like unknown keys of a config file.

pydantic-settings reads the variables that match a field and ignores every other one with the prefix, so a typo
(``STOREGATE_HUB_MQTT__PROT=8883``) left the setting at its default without a word. :func:`unknown_variables` walks
the settings model the way pydantic-settings maps names (prefix, nested keys joined by a delimiter, any case) and
names each variable that reaches no field, with the nearest real name.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings section an annotation holds (``Section``, ``Section | None``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        models = [model for arg in get_args(annotation) if (model := _model_of(arg)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def _is_mapping(annotation: Any) -> bool:
    """Whether a field takes free keys (a dict): any name below it is the field's business."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_mapping(arg) for arg in get_args(annotation))
    return annotation is dict or origin is dict


def _names(model: type[BaseModel], prefix: str, delimiter: str) -> Iterator[str]:
    """Every variable name that sets something of ``model``: each field, and each section's fields below it."""
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        yield name
        section = _model_of(field.annotation)
        if section is not None:
            yield from _names(section, name + delimiter, delimiter)


def _reaches_a_field(model: type[BaseModel], parts: list[str]) -> bool:
    head, *rest = parts
    fields = {name.lower(): field for name, field in model.model_fields.items()}
    field = fields.get(head.lower())
    if field is None:
        return False
    if not rest:
        return True
    if _is_mapping(field.annotation):
        return True
    section = _model_of(field.annotation)
    return section is not None and _reaches_a_field(section, rest)


def unknown_variables(
    model: type[BaseModel], environ: Mapping[str, str], *, prefix: str, delimiter: str = "__"
) -> list[str]:
    """One sentence per variable of ``environ`` with ``prefix`` that sets nothing of ``model``, with a suggestion."""
    known = sorted(set(_names(model, prefix.upper(), delimiter)))
    problems = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(prefix.upper()):
            continue
        rest = upper[len(prefix) :]
        if rest and _reaches_a_field(model, rest.split(delimiter)):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; the settings' names are {prefix}<KEY>, nested keys "
        if not close:
            hint += f"joined by {delimiter} (docs/operations.md)"
        problems.append(f"environment variable {variable}: names no setting{hint}")
    return problems
