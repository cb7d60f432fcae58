"""What pydantic's lax mode lets through and a scenario file must not: a boolean or a
quoted string where a number belongs (``load_peak_kw = true``, ``seed = "1"``), an
infinite or NaN number, and a misspelt field without a hint of the right one.

The raw file is walked against the schema's field types before validation, so every
such value is named with its field and file, together with pydantic's own problems.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel

_NUMBERS = (int, float)


def _alternatives(annotation: Any) -> list[Any]:
    """The types a field accepts: unions and Optional opened, Literal as its values'
    types, Annotated stripped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _alternatives(arg)]
    if origin is Literal:
        return [type(v) for v in typing.get_args(annotation)]
    return [annotation]


def _scalar_kinds(alternatives: list[Any]) -> set[type]:
    return {t for t in alternatives if isinstance(t, type)}


def _containers(alternatives: list[Any]) -> list[Any]:
    return [t for t in alternatives if typing.get_origin(t) in (list, tuple, dict)
            or (isinstance(t, type) and issubclass(t, BaseModel))]


def _value_problems(value: Any, annotation: Any, where: str) -> list[str]:
    alternatives = _alternatives(annotation)
    kinds = _scalar_kinds(alternatives)
    if isinstance(value, dict):
        for t in _containers(alternatives):
            if isinstance(t, type) and issubclass(t, BaseModel):
                return field_problems(value, t, where)
            if typing.get_origin(t) is dict:
                value_type = typing.get_args(t)[1]
                return [p for k, v in value.items()
                        for p in _value_problems(v, value_type, f"{where}.{k}")]
        return []
    if isinstance(value, list):
        for t in _containers(alternatives):
            origin, args = typing.get_origin(t), typing.get_args(t)
            if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
                return [p for i, v in enumerate(value)
                        for p in _value_problems(v, args[0], f"{where}[{i}]")]
            if origin is tuple and args and len(args) == len(value):
                return [p for i, (v, a) in enumerate(zip(value, args))
                        for p in _value_problems(v, a, f"{where}[{i}]")]
        return []
    wants_number = bool(kinds & set(_NUMBERS))
    wants_flag = bool in kinds and not wants_number
    textual = bool(kinds & {str, dt.date, dt.datetime, dt.time})
    if isinstance(value, bool):
        if wants_number and bool not in kinds:
            return [f"{where} = {value!r}: a boolean where a number belongs"]
    elif isinstance(value, str):
        if (wants_number or wants_flag) and not textual:
            kind = "a number" if wants_number else "true or false"
            return [f"{where} = {value!r}: a quoted string where {kind} belongs "
                    "(write it without quotes)"]
    elif isinstance(value, (int, float)):
        if wants_flag:
            return [f"{where} = {value!r}: a number where true or false belongs"]
        if isinstance(value, float) and not math.isfinite(value):
            return [f"{where} = {value!r}: must be a finite number"]
        if isinstance(value, float) and int in kinds and float not in kinds:
            return [f"{where} = {value!r}: a decimal number where an integer belongs"]
    return []


def field_problems(data: dict[str, Any], model: type[BaseModel], where: str = "") -> list[str]:
    """Every boolean, string or non-finite number where ``model`` wants a number, in the
    raw ``data`` (fields the model does not know are left to pydantic)."""
    problems = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is not None:
            problems += _value_problems(value, field.annotation, f"{where}.{key}" if where
                                        else key)
    return problems


def model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model whose field list applies at ``loc`` (a pydantic error location)."""
    annotation: Any = root
    for part in loc:
        model = next((t for t in _alternatives(annotation)
                      if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
            continue
        container = next((t for t in _alternatives(annotation)
                          if typing.get_origin(t) in (list, tuple, dict)), None)
        if container is None:
            return None
        args = typing.get_args(container)
        annotation = args[-1] if typing.get_origin(container) is dict else args[0]
    return next((t for t in _alternatives(annotation)
                 if isinstance(t, type) and issubclass(t, BaseModel)), None)


def did_you_mean(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """'; did you mean X?' for a misspelt field name at ``loc``, else ''."""
    model = model_at(root, loc[:-1])
    if model is None or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
