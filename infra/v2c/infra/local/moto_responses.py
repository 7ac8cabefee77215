"""moto's DynamoDB data-plane answers written as JSON directly, not walked shape by shape.

moto 5.2 serializes every answer by walking the operation's botocore output
shape member by member, trying several spellings of each key on the way. A
DynamoDB data-plane answer is already in wire form once moto has turned its
items into `{"S": ...}` maps (`dynamo_to_dict`): the walk only copies it. On
the 1,000-vehicle rollout that walk was 26 % of the moto server's CPU
(py-spy, GIL samples), more than the status batches' BatchGetItem reads
themselves, and moto is the one process that bounds the local stack.

`install` writes the answers of the operations in `DATA_PLANE` with
`json.dumps`: the members the output shape has, binary attributes
base64-encoded as the JSON protocol does, members without a value left out
as the shape walk leaves them out, and the same status and content type.
Errors, and every other operation (table descriptions carry timestamps the
walk formats), keep moto's own path. A value the direct path does not know
falls back to moto's path too.

Before that, moto turns the items into maps with `dynamo_to_dict`, which
asks each node of each item in turn whether it is a datetime, a DynamoType,
something with `to_json`, a dict or a list (6 % of the server's CPU, most of
it BatchGetItem's answers). `install` gives moto's handler `to_wire_maps`:
the same result, found by the node's exact type, with every node it does
not know (binary values, objects with `to_json`) handed to moto's own.

`install(verify=True)` (the tests) writes every such answer both ways and
raises if the two differ once parsed, and checks every `to_wire_maps`
result against moto's `dynamo_to_dict`.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from typing import Any, Final

from v2c.infra.local.moto_verify import ShortcutDiffers, same

_MARK: Final = "_v2c_direct_json"
CONTENT_TYPE: Final = "application/x-amz-json-1.0"

# The operations whose answers hold only items, keys, counts and capacities.
DATA_PLANE: Final = frozenset(
    {
        "GetItem",
        "BatchGetItem",
        "Query",
        "Scan",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)


class AnswersDiffer(ShortcutDiffers):
    """The direct answer and moto's own differ (`verify=True` only)."""


class _Unknown(TypeError):
    pass


def _wire(value: Any) -> Any:
    """`value` in the JSON protocol's form: no `None` members, bytes as base64."""
    kind = type(value)
    if kind is dict:
        return {k: _wire(v) for k, v in value.items() if v is not None}
    if kind is list:
        return [_wire(v) for v in value]
    if kind is str or kind is int or kind is float or kind is bool:
        return value
    if kind is bytes:
        return base64.b64encode(value).decode("ascii")
    raise _Unknown(kind.__name__)


def direct_body(result: Any, members: frozenset[str]) -> str | None:
    """The answer's JSON body, its top level cut to the output shape's
    `members` (moto adds keys the shape does not have, which its walk drops),
    or None when it holds a value only moto's walk knows."""
    if type(result) is not dict:
        return None
    try:
        return json.dumps(
            {k: _wire(v) for k, v in result.items() if k in members and v is not None}
        )
    except _Unknown:
        return None


@functools.cache
def _members(operation: str) -> frozenset[str]:
    from moto.core.utils import get_service_model

    shape = get_service_model("dynamodb").operation_model(operation).output_shape
    return frozenset(shape.members) if shape is not None else frozenset()


# DynamoType kinds whose value moto's `dynamo_to_dict` hands back as it is
# (a str or a bool), and those whose value it walks (a map, a list, a set of
# strings): binary kinds are left to moto, which decodes them.
_SCALAR_KINDS: Final = frozenset({"S", "N", "BOOL", "NULL"})
_NESTED_KINDS: Final = frozenset({"M", "L", "SS", "NS"})


def wire_maps(moto_dynamo_to_dict: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`dynamo_to_dict` by exact type: dicts, lists, plain values and the
    common DynamoTypes here, anything else through `moto_dynamo_to_dict`."""
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict

    def to_wire_maps(obj: Any) -> Any:
        kind = type(obj)
        if kind is dict or kind is LimitedSizeDict:  # the latter: an item's attributes
            return {k: to_wire_maps(v) for k, v in obj.items()}
        if kind is list:
            return [to_wire_maps(v) for v in obj]
        if kind is str or kind is int or kind is float or kind is bool or obj is None:
            return obj
        if kind is DynamoType:
            value = obj.value
            if obj.type in _SCALAR_KINDS and type(value) in (str, bool):
                return {obj.type: value}
            if obj.type in _NESTED_KINDS:
                return {obj.type: to_wire_maps(value)}
        return moto_dynamo_to_dict(obj)

    return to_wire_maps


def _checked(
    ours: Callable[[Any], Any], moto_dynamo_to_dict: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    def to_wire_maps(obj: Any) -> Any:
        mine, theirs = ours(obj), moto_dynamo_to_dict(obj)
        if not same(mine, theirs):
            raise AnswersDiffer(f"dynamo_to_dict: {theirs!r} != {mine!r}")
        return mine

    return to_wire_maps


def install(*, verify: bool = False) -> None:
    """Patch moto's DynamoDB handler in this process (the moto server child)."""
    from moto.core.responses import ActionResult
    from moto.dynamodb import responses
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.serialized, _MARK, False):
        return
    # `DynamoResult` reads `dynamo_to_dict` from the handler module's globals.
    moto_dynamo_to_dict: Callable[[Any], Any] = getattr(responses, "dynamo_to_dict")  # noqa: B009
    fast = wire_maps(moto_dynamo_to_dict)
    setattr(responses, "dynamo_to_dict", _checked(fast, moto_dynamo_to_dict) if verify else fast)  # noqa: B010
    moto_serialized = DynamoHandler.serialized

    def serialized(self: Any, action_result: ActionResult) -> Any:
        result = action_result.result
        if isinstance(result, Exception) or self._get_action() not in DATA_PLANE:
            return moto_serialized(self, action_result)
        body = direct_body(result, _members(self._get_action()))
        if body is None:
            return moto_serialized(self, action_result)
        headers = {"Content-Type": CONTENT_TYPE, **self.response_headers}
        if verify:
            status, their_headers, their_body = moto_serialized(self, action_result)
            if (status, their_headers, json.loads(their_body)) != (
                200,
                headers,
                json.loads(body),
            ):
                raise AnswersDiffer(f"{self._get_action()}: {their_body!r} != {body}")
        return 200, headers, body

    setattr(serialized, _MARK, True)
    DynamoHandler.serialized = serialized  # type: ignore[method-assign]
