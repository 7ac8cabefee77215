"""Reading the template's functions back for the Lambda emulator: pure, no AWS."""

from __future__ import annotations

import pytest

from v2c.contract.errors import ConfigurationError
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.local.template_functions import Resolver, parse_template, read_template, resolve

DOC = {
    "Parameters": {
        "Stage": {"Type": "String", "Default": "prod"},
        "Regions": {"Default": ["a", "b"]},
    },
    "Globals": {
        "Function": {
            "Timeout": 9,
            "CodeUri": "build/lambda",
            "Environment": {"Variables": {"A": "1", "T": {"Ref": "Table"}}},
        }
    },
    "Resources": {
        "Table": {"Type": "AWS::DynamoDB::Table", "Properties": {"TableName": "t"}},
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q"}},
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Handler": "m.h",
                "Environment": {
                    "Variables": {
                        "A": "2",
                        "Q": {"Fn::GetAtt": ["Queue", "Arn"]},
                        "S": {"Fn::Sub": "${Stage}-${AWS::Region}-${Queue.Arn}"},
                    }
                },
                "Events": {
                    "Api": {"Type": "Api", "Properties": {"Path": "/{proxy+}", "Method": "ANY"}},
                    "Health": {
                        "Type": "Api",
                        "Properties": {
                            "Path": "/health",
                            "Method": "get",
                            "Auth": {"Authorizer": "NONE"},
                        },
                    },
                    "Tick": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}},
                },
            },
        },
        "Mapping": {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": {"Fn::GetAtt": ["Queue", "Arn"]},
                "FunctionName": {"Ref": "Fn"},
                "BatchSize": 100,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "ScalingConfig": {"MaximumConcurrency": 4},
            },
        },
    },
}
RESOLVER = Resolver(
    region="eu-west-1",
    parameters={"Stage": "prod"},
    refs={"Table": "t", "Queue": "https://q"},
    attributes={("Queue", "Arn"): "arn:aws:sqs:eu-west-1:123456789012:q"},
)


def test_a_function_merges_globals_and_resolves_its_environment() -> None:
    fn = parse_template(DOC).function("Fn")
    assert (fn.handler, fn.timeout_s, fn.code_uri) == ("m.h", 9, "build/lambda")
    assert fn.resolved_environment(RESOLVER) == {
        "A": "2",
        "T": "t",
        "Q": "arn:aws:sqs:eu-west-1:123456789012:q",
        "S": "prod-eu-west-1-arn:aws:sqs:eu-west-1:123456789012:q",
    }


def test_events_and_mappings_are_read() -> None:
    template = parse_template(DOC)
    fn = template.function("Fn")
    assert [(r.path, r.method, r.public) for r in fn.api_routes] == [
        ("/{proxy+}", "ANY", False),
        ("/health", "GET", True),
    ]
    assert fn.schedules == (("Tick", "rate(1 minute)"),)
    (mapping,) = template.mappings
    assert (mapping.queue, mapping.function, mapping.batch_size) == ("Queue", "Fn", 100)
    assert mapping.partial_batch_response
    assert mapping.max_concurrency == 4
    assert template.parameter_defaults() == {"Stage": "prod", "Regions": "a,b"}


def test_an_unknown_reference_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Missing"):
        resolve({"Ref": "Missing"}, RESOLVER)
    with pytest.raises(ConfigurationError, match=r"Table\.Arn"):
        resolve({"Fn::GetAtt": "Table.Arn"}, RESOLVER)
    with pytest.raises(ConfigurationError, match="no function"):
        parse_template(DOC).function("Nope")


def test_the_committed_template_reads() -> None:
    template = read_template(TEMPLATE_PATH)
    handlers = {f.handler for f in template.functions.values()}
    assert "v2c.handlers.ota_status.lambda_handler" in handlers
    assert all(m.function in template.functions for m in template.mappings)
