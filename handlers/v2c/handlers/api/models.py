"""The base of every request body model: JSON Schema's types, strictly, no unknown fields.

Powertools validates a JSON body as Python data, where pydantic's default
(lax) mode turns `0` into `False` and `"5"` into `5`: the API would accept
bodies its OpenAPI document calls invalid, and a client's misspelt field
would be dropped silently. `RequestModel` makes a model mean what the
document says: strict types and `additionalProperties: false`. One lax rule
stays, because JSON Schema has it too: an `integer` may be written `55.0`
(a number with no fraction), so an `int` field (or `int | None`) accepts an
integral float. Inside containers (`list[int]`) use `JsonInt`.

Strict mode checks Python types, not JSON text, so two kinds of field need
`Field(strict=False)` to accept the string JSON carries: `datetime`/`date`
(`Annotated[datetime, Field(strict=False)]`) and `Enum` classes (or use a
`Literal[...]`, which is strict-safe). Query, path and header parameters are
strings on the wire: leave them lax (plain annotations, not a model).
Response models need none of this.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator


def _integral_to_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_integral_to_int)]
"""An `int` that also accepts JSON Schema's integral numbers (`55.0`)."""


def _takes_int_not_float(annotation: Any) -> bool:
    if annotation is int:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        members = get_args(annotation)
        return int in members and float not in members
    return False


class RequestModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            key = field.alias or name
            value = data.get(key)
            if isinstance(value, float) and _takes_int_not_float(field.annotation):
                data = {**data, key: _integral_to_int(value)}
        return data
