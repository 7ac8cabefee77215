"""The fleet-manager API in `template.yaml`: REST API, Cognito users and their roles.

The API stays a REST API (the handler is Powertools' APIGatewayRestResolver,
proxy events of format 1.0). A Cognito user pool authorizer guards every
route by default; the API function trusts it (`V2C_API_TRUST_AUTHORIZER=1`)
and reads the caller's roles from the `cognito:groups` claim
(`v2c.handlers.api.auth`), so there is one user-pool group per API role
(`v2c.handlers.api.roles.Role`). `/health`, the OpenAPI document and the
dashboard's page and assets (`v2c.handlers.dashboard`) are public, as the
API itself says (`roles.py`): they have events of their own with no
authorizer, one per asset name (exactly the names the function serves
without a credential; any other name goes through the authorizer). The
dashboard holds no data: every call it makes carries the user's Cognito ID
token, which the authorizer checks.

Users are created by an administrator (no self sign-up): whoever holds an
account can at least read the fleet. MFA is optional (TOTP), passwords are
long, and the pool is retained when the stack goes.
"""

from __future__ import annotations

from typing import Any, Final

from v2c.handlers.api.roles import Role
from v2c.handlers.dashboard import ASSETS
from v2c.infra.aws.template_storage import STATEFUL, arn, logical, skip

API: Final = "Api"
USER_POOL: Final = "UserPool"
USER_POOL_CLIENT: Final = "UserPoolClient"
AUTHORIZER: Final = "CognitoAuthorizer"
# Raw and form (PRD) firmware uploads arrive base64-encoded to the Lambda
# only if API Gateway treats the type as binary (`~1` is SAM's `/`).
BINARY_MEDIA_TYPES: Final = ("application~1octet-stream", "multipart~1form-data")
PUBLIC_ROUTES: Final = (
    ("Health", "/health"),
    ("OpenApi", "/api/v1/openapi.json"),
    ("Dashboard", "/dashboard"),
    *((f"Dashboard{logical(name)}", f"/dashboard/assets/{name}") for name in sorted(ASSETS)),
)
# Per stage, every method: what a fleet-manager console and CLI need, and a
# bound on the API function's concurrency (no reserved concurrency needed).
THROTTLE_RATE: Final = 50
THROTTLE_BURST: Final = 100


def user_pool(name: str) -> dict[str, Any]:
    return {
        USER_POOL: {
            "Type": "AWS::Cognito::UserPool",
            **STATEFUL,
            "Properties": {
                "UserPoolName": name,
                "UsernameAttributes": ["email"],
                "AutoVerifiedAttributes": ["email"],
                "UsernameConfiguration": {"CaseSensitive": False},
                "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True},
                "MfaConfiguration": "OPTIONAL",
                "EnabledMfas": ["SOFTWARE_TOKEN_MFA"],
                "Policies": {
                    "PasswordPolicy": {
                        "MinimumLength": 14,
                        "RequireLowercase": True,
                        "RequireUppercase": True,
                        "RequireNumbers": True,
                        "RequireSymbols": True,
                        "TemporaryPasswordValidityDays": 3,
                    }
                },
                "AccountRecoverySetting": {
                    "RecoveryMechanisms": [{"Name": "verified_email", "Priority": 1}]
                },
                "DeletionProtection": "ACTIVE",
            },
        },
        USER_POOL_CLIENT: {
            "Type": "AWS::Cognito::UserPoolClient",
            "Properties": {
                "ClientName": f"{name}-cli",
                "UserPoolId": {"Ref": USER_POOL},
                "GenerateSecret": False,  # the CLI and a browser cannot keep one
                "ExplicitAuthFlows": ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
                "PreventUserExistenceErrors": "ENABLED",
                "EnableTokenRevocation": True,
                "AccessTokenValidity": 60,
                "IdTokenValidity": 60,
                "RefreshTokenValidity": 30,
                "TokenValidityUnits": {
                    "AccessToken": "minutes",
                    "IdToken": "minutes",
                    "RefreshToken": "days",
                },
            },
        },
        **{
            logical(role.value, "Group"): {
                "Type": "AWS::Cognito::UserPoolGroup",
                "Properties": {
                    "GroupName": role.value,
                    "UserPoolId": {"Ref": USER_POOL},
                    "Description": f"API role {role.value} (v2c.handlers.api.roles)",
                },
            }
            for role in Role
        },
    }


def rest_api() -> dict[str, Any]:
    return {
        API: {
            "Type": "AWS::Serverless::Api",
            "Properties": {
                "StageName": {"Ref": "Stage"},
                # Without it SAM also deploys a stage named "Stage".
                "OpenApiVersion": "3.0.1",
                "TracingEnabled": True,
                "BinaryMediaTypes": list(BINARY_MEDIA_TYPES),
                "MethodSettings": [
                    {
                        "ResourcePath": "/*",
                        "HttpMethod": "*",
                        "ThrottlingRateLimit": THROTTLE_RATE,
                        "ThrottlingBurstLimit": THROTTLE_BURST,
                    }
                ],
                "Auth": {
                    "DefaultAuthorizer": AUTHORIZER,
                    "AddDefaultAuthorizerToCorsPreflight": False,
                    "Authorizers": {AUTHORIZER: {"UserPoolArn": arn(USER_POOL)}},
                },
            },
            "Metadata": skip(
                (
                    "CKV_AWS_76",
                    "access logs need the account-wide API Gateway CloudWatch role "
                    "(AWS::ApiGateway::Account), an account setting a stack must not own; "
                    "the function logs every request with its request id",
                ),
                ("CKV_AWS_120", "answers are per caller and change by the second: no cache"),
            ),
        }
    }


def api_events() -> dict[str, Any]:
    """The API function's events: everything through the proxy route behind
    the authorizer, the public routes without it."""
    events: dict[str, Any] = {
        "Proxy": {
            "Type": "Api",
            "Properties": {"RestApiId": {"Ref": API}, "Path": "/{proxy+}", "Method": "ANY"},
        }
    }
    for name, path in PUBLIC_ROUTES:
        events[name] = {
            "Type": "Api",
            "Properties": {
                "RestApiId": {"Ref": API},
                "Path": path,
                "Method": "GET",
                "Auth": {"Authorizer": "NONE"},
            },
        }
    return events


def api_url() -> dict[str, Any]:
    return {
        "Fn::Sub": f"https://${{{API}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/${{Stage}}/"
    }
