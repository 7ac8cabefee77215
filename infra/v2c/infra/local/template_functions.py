"""What `template.yaml` gives each Lambda function, read back for the emulator.

The Lambda emulator (`lambda_runtime`, `event_sources`) must run each
function as AWS would run it from the deployed template, not as the local
stack wires it: the handler string, the timeout and memory, the environment
(the `Globals` merged with the function's own, references resolved), and the
events that invoke it (queue mappings, the API, schedules). This module reads
those out of the template, which is plain YAML (the generator writes the long
`Fn::` forms), and resolves CloudFormation's intrinsic functions against a
`Resolver` the caller fills with the physical ids of the emulated account.

Pure: no AWS calls, no processes. What a reference resolves to is the
caller's business (a moto queue URL, a key id), so the rules of `Ref` and
`Fn::GetAtt` per resource type are data here, not I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from v2c.contract.errors import ConfigurationError

FUNCTION_TYPE: Final = "AWS::Serverless::Function"
MAPPING_TYPE: Final = "AWS::Lambda::EventSourceMapping"
PSEUDO_ACCOUNT: Final = "123456789012"  # moto's default account
_SUB_VARIABLE: Final = re.compile(r"\$\{([^}!][^}]*)\}")


@dataclass(frozen=True, slots=True)
class Resolver:
    """Physical values for references: parameters, pseudo parameters, and per
    logical id what `Ref` and `Fn::GetAtt` give."""

    region: str
    account: str = PSEUDO_ACCOUNT
    stack_name: str = "v2c"
    parameters: Mapping[str, str] = field(default_factory=dict)
    refs: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def pseudo(self) -> dict[str, str]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def ref(self, name: str) -> str:
        for table in (self.pseudo(), self.parameters, self.refs):
            if name in table:
                return table[name]
        raise ConfigurationError(f"template reference {name!r} has no value in the emulator")

    def get_att(self, logical: str, attribute: str) -> str:
        try:
            return self.attributes[(logical, attribute)]
        except KeyError:
            raise ConfigurationError(
                f"template Fn::GetAtt {logical}.{attribute} has no value in the emulator"
            ) from None


def resolve(value: Any, resolver: Resolver) -> Any:
    """`value` with every intrinsic function the functions' properties use
    (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`, `Fn::If` is not used) replaced."""
    if isinstance(value, list):
        return [resolve(v, resolver) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return resolver.ref(str(arg))
        if key == "Fn::GetAtt":
            logical, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return resolver.get_att(str(logical), str(attribute))
        if key == "Fn::Sub":
            return _sub(arg, resolver)
        if key == "Fn::Join":
            separator, parts = arg
            resolved = resolve(parts, resolver)
            if isinstance(resolved, str):  # a list parameter's Ref: its values, comma-joined
                resolved = resolved.split(",")
            return str(separator).join(str(resolve(p, resolver)) for p in resolved)
    return {k: resolve(v, resolver) for k, v in value.items()}


def _sub(arg: Any, resolver: Resolver) -> str:
    text, variables = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in variables:
            return str(resolve(variables[name], resolver))
        if "." in name:
            logical, attribute = name.split(".", 1)
            return resolver.get_att(logical, attribute)
        return resolver.ref(name)

    # `${!name}` is a literal `${name}` (an IoT policy variable, for instance).
    return _SUB_VARIABLE.sub(one, str(text)).replace("${!", "${")


@dataclass(frozen=True, slots=True)
class QueueMapping:
    """An SQS event source mapping: which queue feeds which function, how."""

    logical_id: str
    queue: str  # the queue's logical id
    function: str  # the function's logical id
    batch_size: int
    window_s: int
    partial_batch_response: bool
    max_concurrency: int | None


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One `Api` event of a function: its path, method and whether the
    API's default authorizer guards it."""

    path: str
    method: str
    public: bool


@dataclass(frozen=True, slots=True)
class FunctionDef:
    """A function as the template deploys it (environment still unresolved)."""

    logical_id: str
    handler: str
    timeout_s: int
    memory_mb: int
    runtime: str
    code_uri: str
    environment: dict[str, Any]
    api_routes: tuple[ApiRoute, ...] = ()
    schedules: tuple[tuple[str, str], ...] = ()  # (event name, schedule expression)
    event_rules: tuple[dict[str, Any], ...] = ()  # EventBridge patterns that invoke it

    def resolved_environment(self, resolver: Resolver) -> dict[str, str]:
        return {k: str(resolve(v, resolver)) for k, v in self.environment.items()}


@dataclass(frozen=True, slots=True)
class TemplateFunctions:
    functions: dict[str, FunctionDef]
    mappings: tuple[QueueMapping, ...]
    resources: dict[str, dict[str, Any]]
    parameters: dict[str, dict[str, Any]]

    def function(self, logical_id: str) -> FunctionDef:
        try:
            return self.functions[logical_id]
        except KeyError:
            known = ", ".join(sorted(self.functions))
            raise ConfigurationError(
                f"the template has no function {logical_id!r} ({known})"
            ) from None

    def by_handler(self, handler: str) -> FunctionDef:
        for definition in self.functions.values():
            if definition.handler == handler:
                return definition
        raise ConfigurationError(f"no function in the template runs {handler}")

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v.get("Type") == resource_type}

    def parameter_defaults(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, spec in self.parameters.items():
            if "Default" in spec:
                default = spec["Default"]
                out[name] = ",".join(default) if isinstance(default, list) else str(default)
        return out


def read_template(path: Path) -> TemplateFunctions:
    """The functions, mappings, resources and parameters of a SAM template."""
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict) or "Resources" not in document:
        raise ConfigurationError(f"{path} is not a CloudFormation template")
    return parse_template(document)


def parse_template(document: Mapping[str, Any]) -> TemplateFunctions:
    resources: dict[str, dict[str, Any]] = dict(document["Resources"])
    globals_ = (document.get("Globals") or {}).get("Function") or {}
    functions = {
        logical: _function(logical, spec.get("Properties") or {}, globals_)
        for logical, spec in resources.items()
        if spec.get("Type") == FUNCTION_TYPE
    }
    mappings = tuple(
        _mapping(logical, spec.get("Properties") or {})
        for logical, spec in resources.items()
        if spec.get("Type") == MAPPING_TYPE
    )
    return TemplateFunctions(functions, mappings, resources, dict(document.get("Parameters") or {}))


def _function(logical: str, props: Mapping[str, Any], globals_: Mapping[str, Any]) -> FunctionDef:
    environment = dict(((globals_.get("Environment") or {}).get("Variables")) or {})
    environment.update(((props.get("Environment") or {}).get("Variables")) or {})
    routes: list[ApiRoute] = []
    schedules: list[tuple[str, str]] = []
    event_rules: list[dict[str, Any]] = []
    for name, event in (props.get("Events") or {}).items():
        kind, eprops = event.get("Type"), event.get("Properties") or {}
        if kind == "Api":
            authorizer = (eprops.get("Auth") or {}).get("Authorizer")
            routes.append(
                ApiRoute(str(eprops["Path"]), str(eprops["Method"]).upper(), authorizer == "NONE")
            )
        elif kind == "EventBridgeRule":
            event_rules.append(dict(eprops.get("Pattern") or {}))
        elif kind in {"Schedule", "ScheduleV2"}:
            schedules.append(
                (str(name), str(eprops.get("Schedule") or eprops.get("ScheduleExpression")))
            )
    return FunctionDef(
        logical_id=logical,
        handler=str(props["Handler"]),
        timeout_s=int(props.get("Timeout", globals_.get("Timeout", 3))),
        memory_mb=int(props.get("MemorySize", globals_.get("MemorySize", 128))),
        runtime=str(props.get("Runtime", globals_.get("Runtime", ""))),
        code_uri=str(props.get("CodeUri", globals_.get("CodeUri", "."))),
        environment=environment,
        api_routes=tuple(routes),
        schedules=tuple(schedules),
        event_rules=tuple(event_rules),
    )


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """An EventBridge pattern's exact-value matching (what the template's
    rules use): every key of the pattern lists the values the event's field
    may take; a nested object matches the event's nested object."""
    for key, wanted in pattern.items():
        value = event.get(key)
        if isinstance(wanted, Mapping):
            if not isinstance(value, Mapping) or not matches(wanted, value):
                return False
        elif value not in wanted:
            return False
    return True


def _logical_of(value: Any) -> str:
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            arg = value["Fn::GetAtt"]
            return str(arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0])
    raise ConfigurationError(f"an event source mapping names {value!r}, not a template resource")


def _mapping(logical: str, props: Mapping[str, Any]) -> QueueMapping:
    scaling = props.get("ScalingConfig") or {}
    return QueueMapping(
        logical_id=logical,
        queue=_logical_of(props["EventSourceArn"]),
        function=_logical_of(props["FunctionName"]),
        batch_size=int(props.get("BatchSize", 10)),
        window_s=int(props.get("MaximumBatchingWindowInSeconds", 0)),
        partial_batch_response="ReportBatchItemFailures"
        in (props.get("FunctionResponseTypes") or []),
        max_concurrency=scaling.get("MaximumConcurrency"),
    )
