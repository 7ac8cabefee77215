"""Pydantic validation errors turned into v2c's `ValidationFailed`.

Pydantic's own messages are written for Python programmers ("Input should be
less than or equal to 500"), carry URLs, and lose the business rule behind a
limit. API callers need one line per field that says what is wrong, what is
allowed and what they sent, and the handlers need a typed error from the one
hierarchy (400 with a `detail`). That translation lives here, once, for every
request model of the OTA API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from v2c.contract.errors import ValidationFailed

RULE_ERROR: Final = "v2c_rule"
MAX_PROBLEMS: Final = 20
_MAX_SHOWN: Final = 40
_BOUND_WORDS: Final = {
    "greater_than_equal": "at least {ge}",
    "greater_than": "greater than {gt}",
    "less_than_equal": "at most {le}",
    "less_than": "less than {lt}",
}

_LENGTH_ERRORS: Final = frozenset({"string_too_short", "string_too_long", "too_short", "too_long"})

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str  # dotted path: "maintenance_window.start", "target_devices[3]"
    reason: str


class FieldValidationFailed(ValidationFailed):
    """Every problem of one request at once, so a caller fixes them in one round."""

    def __init__(self, subject: str, problems: tuple[FieldProblem, ...]) -> None:
        # A list of 100,000 bad ids must not become a 100,000-line answer.
        shown_problems = problems[:MAX_PROBLEMS]
        text = "; ".join(f"{p.field}: {p.reason}" for p in shown_problems)
        if len(problems) > MAX_PROBLEMS:
            text += f"; and {len(problems) - MAX_PROBLEMS} more"
        super().__init__(f"invalid {subject}: {text}")
        self.problems = shown_problems


def rule_error(reason: str) -> PydanticCustomError:
    """A validator's own message, passed through a context value so braces in
    user input are never read as a message template."""
    return PydanticCustomError(RULE_ERROR, "{reason}", {"reason": reason})


class CrossFieldProblems(ValueError):
    """Raised by a model validator for rules that span fields, so each problem
    is still reported under the field it concerns rather than under the model."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.reason}" for p in problems))
        self.problems = tuple(problems)


def shown(value: object) -> str:
    """A short, safe rendering of an offending input for a message."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _field(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "body"


def _reason(error: Mapping[str, Any], limits: Mapping[str, str]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    field = str(error["loc"][0]) if error["loc"] else ""
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind in _LENGTH_ERRORS and field in limits:
        return f"must be {limits[field]}"
    if kind in _BOUND_WORDS:
        rule = limits.get(field)
        if rule is not None:
            return f"must be {rule}, got {shown(error['input'])}"
        return f"must be {_BOUND_WORDS[kind].format(**ctx)}, got {shown(error['input'])}"
    if kind == "enum":
        return f"must be one of {ctx.get('expected', '')}, got {shown(error['input'])}"
    message = str(error["msg"])
    if kind == RULE_ERROR:
        return message
    message = message.removeprefix("Value error, ")
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    return f"{message}, got {shown(error['input'])}" if "input" in error else message


def problems_of(exc: ValidationError, limits: Mapping[str, str]) -> tuple[FieldProblem, ...]:
    """One `FieldProblem` per pydantic error; `limits` words a field's range with its rule."""
    problems: list[FieldProblem] = []
    for error in exc.errors(include_url=False):
        nested = (error.get("ctx") or {}).get("error")
        if isinstance(nested, CrossFieldProblems):
            problems.extend(nested.problems)
        else:
            problems.append(FieldProblem(_field(error["loc"]), _reason(error, limits)))
    return tuple(problems)


def validate(
    model: type[ModelT],
    data: object,
    *,
    subject: str,
    limits: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> ModelT:
    """`model.model_validate(data)` raising `FieldValidationFailed` instead of pydantic's error."""
    try:
        return model.model_validate(data, context=dict(context or {}))
    except ValidationError as exc:
        raise FieldValidationFailed(subject, problems_of(exc, limits or {})) from None
