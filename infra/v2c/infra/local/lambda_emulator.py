"""The template's functions running from the artifact against moto, with AWS's event sources.

`EmulatedAccount` reads `template.yaml` (`template_functions`), resolves every
reference to what the moto server holds (table names, queue URLs, the key id
behind the signing alias, ARNs in moto's account), starts each function on
first use in an interpreter of its own (`lambda_runtime`), and plays the parts
of AWS that invoke them, in the shapes AWS sends:

* **an SQS event source mapping** (`drain`): receives up to `BatchSize`
  records from the real queue, hands them over as Lambda's SQS event,
  deletes the records the partial-batch response does not name, and makes
  the named ones visible again (the visibility timeout elapsing, in simulated
  time: a test waits for no clock). A function error fails the whole batch.
  SQS itself (moto) moves a record to the queue's dead-letter queue once it
  has been received `maxReceiveCount` times, as the redrive policy says;
* **an IoT topic rule with an SQS action** (`publish`): the rule's SQL
  output for one MQTT message (`v2c.contract.events.build_event`, the shape
  the rule SQL in the template produces) sent to the rule's queue;
* **API Gateway (REST, proxy integration) with the Cognito authorizer**
  (`api`): a request without claims to a guarded route is refused by the
  gateway with 401 before any function runs, as a Cognito authorizer does; a
  request with claims reaches the function with them in
  `requestContext.authorizer.claims`; routes whose event says
  `Auth: {Authorizer: NONE}` are public;
* **an EventBridge schedule** (`tick`): the "Scheduled Event" the rule sends;
* **a direct invoke** (`invoke`), as the console or `aws lambda invoke` does.

What it is not: no concurrency (one warm container per function, one call at
a time), no async invoke of one function by another (moto's Lambda does not
hold these functions; the API's planner invoke is used only for fleets too
large to plan inline), and no IAM evaluation (the template's policies are
checked statically by the template tests and checkov).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from v2c.contract.errors import ConfigurationError
from v2c.contract.events import build_event as iot_event
from v2c.contract.queue_event import EVENT_SOURCE, failed_item_ids
from v2c.infra.aws.template_storage import local_bucket_name
from v2c.infra.local.api_gateway_event import Answer, build_event, parse_result
from v2c.infra.local.lambda_runtime import FunctionConfig, FunctionError, FunctionProcess
from v2c.infra.local.template_functions import (
    PSEUDO_ACCOUNT,
    QueueMapping,
    Resolver,
    TemplateFunctions,
    matches,
    resolve,
)
from v2c.infra.settings import AwsSettings

# The record attributes Lambda's SQS event carries (standard queues).
SQS_RECORD_ATTRIBUTES: Final = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
)
UNAUTHORIZED: Final = b'{"message":"Unauthorized"}'
SQS_RECEIVE_MAX: Final = 10  # ReceiveMessage's MaxNumberOfMessages


@dataclass
class DrainReport:
    """What one `drain` did: batches invoked, records deleted or handed back."""

    batches: int = 0
    succeeded: int = 0
    failed: int = 0
    function_errors: list[str] = field(default_factory=list)


def resolver_for(template: TemplateFunctions, aws: AwsSettings, **parameters: str) -> Resolver:
    """References resolved to the moto account `aws` points at."""
    region, account = aws.region, PSEUDO_ACCOUNT
    refs: dict[str, str] = {}
    attributes: dict[tuple[str, str], str] = {}
    sqs, kms = aws.client("sqs"), aws.client("kms")
    aliases = {a["AliasName"]: a.get("TargetKeyId", "") for a in kms.list_aliases()["Aliases"]}
    for logical, spec in template.resources.items():
        kind, props = str(spec.get("Type")), spec.get("Properties") or {}
        ref, arn = _ref_and_arn(logical, kind, props, region, account)
        if kind == "AWS::S3::Bucket":  # the deployed name carries the account: moto's has none
            ref = local_bucket_name(props.get("BucketName"))
            arn = f"arn:aws:s3:::{ref}"
        elif kind == "AWS::SQS::Queue":
            name = str(props["QueueName"])
            ref = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            attributes[(logical, "QueueName")] = name
        elif kind == "AWS::KMS::Key":
            alias = _alias_of(template, logical)
            key_id = aliases.get(alias or "", "")
            if not key_id:
                raise ConfigurationError(f"moto holds no key behind {alias} ({logical})")
            ref, arn = key_id, f"arn:aws:kms:{region}:{account}:key/{key_id}"
        refs[logical] = ref
        if arn:
            attributes[(logical, "Arn")] = arn
    values = {**template.parameter_defaults(), **parameters}
    return Resolver(
        region=region, account=account, parameters=values, refs=refs, attributes=attributes
    )


def _alias_of(template: TemplateFunctions, key_logical: str) -> str | None:
    for spec in template.of_type("AWS::KMS::Alias").values():
        props = spec.get("Properties") or {}
        if props.get("TargetKeyId") == {"Ref": key_logical}:
            return str(props["AliasName"])
    return None


_NAMED: Final[dict[str, tuple[str, str]]] = {
    # type: (the property holding the physical name, the ARN's format)
    "AWS::DynamoDB::Table": ("TableName", "arn:aws:dynamodb:{r}:{a}:table/{n}"),
    "AWS::S3::Bucket": ("BucketName", "arn:aws:s3:::{n}"),
    "AWS::SQS::Queue": ("QueueName", "arn:aws:sqs:{r}:{a}:{n}"),
    "AWS::Events::EventBus": ("Name", "arn:aws:events:{r}:{a}:event-bus/{n}"),
    "AWS::KinesisFirehose::DeliveryStream": (
        "DeliveryStreamName",
        "arn:aws:firehose:{r}:{a}:deliverystream/{n}",
    ),
    "AWS::IoT::Policy": ("PolicyName", "arn:aws:iot:{r}:{a}:policy/{n}"),
    "AWS::IoT::ThingType": ("ThingTypeName", "arn:aws:iot:{r}:{a}:thingtype/{n}"),
    "AWS::KMS::Alias": ("AliasName", ""),
    "AWS::Serverless::Function": ("FunctionName", "arn:aws:lambda:{r}:{a}:function:{n}"),
    "AWS::IAM::Role": ("RoleName", "arn:aws:iam::{a}:role/{n}"),
    "AWS::Cognito::UserPool": ("UserPoolName", "arn:aws:cognito-idp:{r}:{a}:userpool/{n}"),
}


def _ref_and_arn(
    logical: str, kind: str, props: Mapping[str, Any], region: str, account: str
) -> tuple[str, str]:
    prop, arn_format = _NAMED.get(kind, ("", ""))
    raw = props.get(prop) if prop else None
    name = raw if isinstance(raw, str) else logical
    arn = arn_format.format(r=region, a=account, n=name) if arn_format else ""
    return name, arn


class EmulatedAccount:
    """The template's functions and event sources over one moto server."""

    def __init__(
        self,
        template: TemplateFunctions,
        artifact: Path,
        aws: AwsSettings,
        log_dir: Path,
        **parameters: str,
    ) -> None:
        if aws.endpoint_url is None:
            raise ConfigurationError("the Lambda emulator runs against moto: set an endpoint URL")
        self.template = template
        self.artifact = artifact
        self.aws = aws
        self.log_dir = log_dir
        self.resolver = resolver_for(template, aws, **parameters)
        self._processes: dict[str, FunctionProcess] = {}
        self._sqs = aws.client("sqs")

    # -- functions -----------------------------------------------------------

    def config(self, logical: str) -> FunctionConfig:
        definition = self.template.function(logical)
        named = self.template.resources[logical].get("Properties", {}).get("FunctionName")
        return FunctionConfig(
            name=named if isinstance(named, str) else logical,
            handler=definition.handler,
            timeout_s=definition.timeout_s,
            memory_mb=definition.memory_mb,
            environment=definition.resolved_environment(self.resolver),
            region=self.resolver.region,
            account=self.resolver.account,
        )

    def process(self, logical: str) -> FunctionProcess:
        """The warm container of `logical`, started on first use."""
        running = self._processes.get(logical)
        if running is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            running = FunctionProcess(
                self.config(logical),
                self.artifact,
                str(self.aws.endpoint_url),
                self.log_dir / f"{logical}.log",
            ).start()
            self._processes[logical] = running
        return running

    def invoke(self, logical: str, event: Any) -> Any:
        """A direct, synchronous invoke (`RequestResponse`)."""
        return self.process(logical).invoke(event)

    # -- IoT rule -> queue -> mapping ------------------------------------------

    def mapping_for(self, function: str) -> QueueMapping:
        for mapping in self.template.mappings:
            if mapping.function == function:
                return mapping
        raise ConfigurationError(f"no event source mapping feeds {function}")

    def publish(
        self,
        function: str,
        *,
        rule: str,
        topic: str,
        payload: bytes,
        qos: int = 1,
        properties: Mapping[str, Any] | None = None,
    ) -> str:
        """What the topic rule's SQS action does with one MQTT message: its SQL
        output on the queue that feeds `function`. Returns the message id."""
        body = iot_event(
            rule=rule, topic=topic, payload=payload, qos=qos, properties=dict(properties or {})
        )
        return self.send_raw(function, json.dumps(body, separators=(",", ":")))

    def send_raw(self, function: str, body: str) -> str:
        """Any body on the queue that feeds `function` (a hostile or broken record)."""
        url = self.resolver.ref(self.mapping_for(function).queue)
        return str(self._sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"])

    def drain(self, function: str, max_batches: int = 50) -> DrainReport:
        """Run the mapping that feeds `function` until its queue is empty."""
        mapping = self.mapping_for(function)
        url = self.resolver.ref(mapping.queue)
        arn = self.resolver.get_att(mapping.queue, "Arn")
        report = DrainReport()
        while report.batches < max_batches:
            messages = self._receive(url, mapping.batch_size)
            if not messages:
                break
            report.batches += 1
            event = {"Records": [self._record(m, arn) for m in messages]}
            ids = {str(m["MessageId"]) for m in messages}
            try:
                answer = self.invoke(function, event)
                failed = failed_item_ids(answer) if mapping.partial_batch_response else set()
            except FunctionError as error:
                report.function_errors.append(str(error))
                failed = ids
            done = [m for m in messages if m["MessageId"] not in failed]
            again = [m for m in messages if m["MessageId"] in failed]
            self._settle(url, done, again)
            report.succeeded += len(done)
            report.failed += len(again)
        return report

    def _receive(self, url: str, batch_size: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while len(messages) < batch_size:
            answer = self._sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(SQS_RECEIVE_MAX, batch_size - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            got = answer.get("Messages") or []
            if not got:
                break
            messages.extend(dict(m) for m in got)
        return messages

    def _record(self, message: Mapping[str, Any], arn: str) -> dict[str, Any]:
        attributes = message.get("Attributes") or {}
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {k: attributes[k] for k in SQS_RECORD_ATTRIBUTES if k in attributes},
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": EVENT_SOURCE,
            "eventSourceARN": arn,
            "awsRegion": self.resolver.region,
        }

    def _settle(
        self, url: str, done: Iterable[Mapping[str, Any]], again: Iterable[Mapping[str, Any]]
    ) -> None:
        for chunk in _chunks(list(done), SQS_RECEIVE_MAX):
            self._sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
        for chunk in _chunks(list(again), SQS_RECEIVE_MAX):
            self._sqs.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(chunk)
                ],
            )

    def queue_bodies(self, logical_queue: str) -> list[str]:
        """Every body waiting on a queue (received and handed back at once)."""
        url = self.resolver.ref(logical_queue)
        messages = self._receive(url, 1000)
        self._settle(url, [], messages)
        return [str(m["Body"]) for m in messages]

    # -- API Gateway -------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        claims: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request through the REST API and its Cognito authorizer."""
        function, public = self._route(method, path)
        if not public and claims is None:
            return 401, [("Content-Type", "application/json")], UNAUTHORIZED
        stage = self.resolver.parameters.get("Stage", "prod")
        event = build_event(method, path, headers, body, request_id=str(uuid.uuid4()), stage=stage)
        if not public and claims is not None:
            event["requestContext"]["authorizer"] = {"claims": dict(claims)}
        return parse_result(self.invoke(function, event))

    def _route(self, method: str, path: str) -> tuple[str, bool]:
        bare = path.split("?", 1)[0]
        best: tuple[int, str, bool] | None = None
        for logical, definition in self.template.functions.items():
            for route in definition.api_routes:
                if route.method not in {"ANY", method.upper()}:
                    continue
                if route.path == bare:
                    rank = 2
                elif route.path.endswith("{proxy+}") and bare.startswith(
                    route.path[: -len("{proxy+}")]
                ):
                    rank = 1
                else:
                    continue
                if best is None or rank > best[0]:
                    best = (rank, logical, route.public)
        if best is None:
            raise ConfigurationError(f"no API route serves {method} {bare}")
        return best[1], best[2]

    # -- EventBridge ----------------------------------------------------------------

    def put_event(self, source: str, detail_type: str, detail: Mapping[str, Any]) -> list[str]:
        """What a `PutEvents` entry on the v2c bus does: every function whose
        `EventBridgeRule` pattern matches is invoked with the event. Returns
        the functions invoked (none: no rule matched, as in AWS)."""
        region, account = self.resolver.region, self.resolver.account
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": [],
            "detail": dict(detail),
        }
        invoked = []
        for logical, definition in self.template.functions.items():
            if any(matches(p, event) for p in definition.event_rules):
                self.invoke(logical, event)
                invoked.append(logical)
        return invoked

    def provision_iot(self) -> None:
        """The template's IoT policy and thing type, which `v2c aws bootstrap`
        does not make (locally the broker's dynamic security plays the policy)."""
        iot: Any = self.aws.client("iot")  # no stubs installed for IoT
        for spec in self.template.of_type("AWS::IoT::Policy").values():
            props = resolve(spec["Properties"], self.resolver)
            with contextlib.suppress(iot.exceptions.ResourceAlreadyExistsException):
                iot.create_policy(
                    policyName=props["PolicyName"],
                    policyDocument=json.dumps(props["PolicyDocument"]),
                )
        for spec in self.template.of_type("AWS::IoT::ThingType").values():
            props = spec["Properties"]
            with contextlib.suppress(iot.exceptions.ResourceAlreadyExistsException):
                iot.create_thing_type(
                    thingTypeName=props["ThingTypeName"],
                    thingTypeProperties={  # CloudFormation's casing -> the API's
                        k[0].lower() + k[1:]: v
                        for k, v in (props.get("ThingTypeProperties") or {}).items()
                    },
                )

    # -- EventBridge schedule -----------------------------------------------------

    def tick(self, function: str, now: datetime | None = None) -> Any:
        """One firing of the function's schedule rule."""
        definition = self.template.function(function)
        if not definition.schedules:
            raise ConfigurationError(f"{function} has no schedule in the template")
        name, _expression = definition.schedules[0]
        region, account = self.resolver.region, self.resolver.account
        when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": account,
            "time": when,
            "region": region,
            "resources": [f"arn:aws:events:{region}:{account}:rule/v2c-{function}-{name}"],
            "detail": {},
        }
        return self.invoke(function, event)

    # -- lifetime -----------------------------------------------------------------

    def close(self) -> None:
        for process in self._processes.values():
            process.stop()
        self._processes.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _chunks(items: list[Mapping[str, Any]], size: int) -> list[list[Mapping[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def wait_until_empty(account: EmulatedAccount, function: str, rounds: int = 5) -> DrainReport:
    """Drain until a round finds nothing (moto may take a receive to redrive)."""
    total = DrainReport()
    for _ in range(rounds):
        report = account.drain(function)
        total.batches += report.batches
        total.succeeded += report.succeeded
        total.failed += report.failed
        total.function_errors += report.function_errors
        if report.batches == 0:
            return total
    return total
