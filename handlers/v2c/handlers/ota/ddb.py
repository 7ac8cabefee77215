"""DynamoDB plumbing shared by the OTA repositories: item (de)serialization.

botocore's errors are translated by `v2c.handlers.aws_errors`, for every
feature alike; the names the repositories import from here (`transient`,
`error_code`, `is_condition_failure`) are that module's.

Floats never reach DynamoDB (its numbers are decimals): the repositories
store integers, strings, booleans, lists and maps only; a float is a bug and
fails loudly in `to_item`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from v2c.handlers.aws_errors import error_code, is_condition_failure
from v2c.handlers.aws_errors import translate as transient

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

Item = dict[str, "AttributeValueTypeDef"]

_SERIALIZER: Final = TypeSerializer()
_DESERIALIZER: Final = TypeDeserializer()

__all__ = ["error_code", "from_item", "is_condition_failure", "to_item", "to_value", "transient"]


def to_value(value: Any) -> AttributeValueTypeDef:
    if isinstance(value, float):
        raise TypeError("floats are not stored; use an integer unit")
    return _SERIALIZER.serialize(value)


def to_item(values: Mapping[str, Any]) -> Item:
    """A plain dict as a DynamoDB item; None values are left out."""
    return {k: to_value(v) for k, v in values.items() if v is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    if isinstance(value, Binary):
        raw: bytes = value.value  # type: ignore[attr-defined]
        return raw
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain Python (ints for integral numbers)."""
    return {k: _plain(_DESERIALIZER.deserialize(v)) for k, v in item.items()}
