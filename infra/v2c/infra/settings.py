"""The stack description (`DIR/stack.json`) and how every command finds it.

`v2c stack up` writes one `StackSettings` to `DIR/stack.json`; every other
command, test fixture and the gateway reads it back, so the broker address,
the moto endpoint and the resource names live in one file instead of in
each tool's flags.

Where each value comes from, first match wins (flag > environment > file):

* the stack file: `--stack-dir` flag, else `V2C_STACK_DIR`, else
  `./.stack/stack.json`. A directory named explicitly (flag or variable) that
  holds no stack.json is an error: a pointer to nothing never falls through
  to some other stack.
* `aws.endpoint_url`: `--endpoint-url` flag, else `V2C_AWS_ENDPOINT_URL`,
  else the file. The words `aws` or the empty string mean "real AWS" and
  override a local endpoint in the file.
* `aws.region`: `--region` flag, else `AWS_REGION`, else `AWS_DEFAULT_REGION`,
  else the file.
* `api.url`: `V2C_API_URL`, else the file.

With no stack file at all, settings are built from defaults only if an
endpoint was given explicitly (flag or `V2C_AWS_ENDPOINT_URL`, `aws` for real
AWS): a region alone is not enough, or a developer with `AWS_REGION` in the
shell would silently reach a real account. Otherwise `StackNotFound`.

The boto3 helpers on `AwsSettings` are the one place clients are built:
with `endpoint_url=None` boto3 resolves endpoints and credentials exactly as
usual (real AWS); with an endpoint it gets dummy credentials, so a stray real
profile can never sign requests to moto. Retries are botocore's own
("standard" or "adaptive" mode), never hand-written loops.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, overload

import boto3
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from v2c.contract.errors import ConfigurationError
from v2c.infra.names import ResourceNames
from v2c.infra.net import LOOPBACK

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_timestream_write import TimestreamWriteClient

STACK_FILE = "stack.json"
DEFAULT_STACK_DIR = Path(".stack")
DEFAULT_REGION = "us-east-1"
LOCAL_CREDENTIAL = "testing"  # moto accepts any; this value is moto's documented default
REAL_AWS_WORDS = frozenset({"", "aws"})

ENV_STACK_DIR = "V2C_STACK_DIR"
ENV_ENDPOINT_URL = "V2C_AWS_ENDPOINT_URL"
ENV_REGION = ("AWS_REGION", "AWS_DEFAULT_REGION")
ENV_API_URL = "V2C_API_URL"

Port = Annotated[int, Field(ge=1, le=65535)]


class StackNotFound(ConfigurationError):
    """No stack description where the flags, the environment or the cwd point."""

    reason = "stack_not_found"


class _Model(BaseModel):
    # frozen: settings are shared by threads and never change under a reader;
    # forbid: stack.json is machine-written, so an unknown key is a bug to surface.
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttSettings(_Model):
    """How services reach the broker: `port` is the listener for cloud processes
    (the stack's service mTLS listener, where they present `service_cert`/
    `service_key`; plain TCP for a private test broker without them),
    `tls_port` the mTLS listener vehicles use. Every client trusts `ca_file`
    for the broker. `admin_cert`/`admin_key`: the identity that registers
    vehicles in the running broker (`v2c.infra.local.broker_admin`)."""

    host: str = LOOPBACK
    port: Port
    tls_port: Port | None = None
    ca_file: Path | None = None
    service_cert: Path | None = None
    service_key: Path | None = None
    admin_cert: Path | None = None
    admin_key: Path | None = None

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> MqttSettings:
        if (self.service_cert is None) != (self.service_key is None):
            raise ValueError("service_cert and service_key must be given together")
        if (self.admin_cert is None) != (self.admin_key is None):
            raise ValueError("admin_cert and admin_key must be given together")
        return self


class AwsSettings(_Model):
    """Where AWS is (moto or the real thing) and how patient boto3 should be."""

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    retry_mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = Field(default=5, ge=1, le=20)
    connect_timeout: float = Field(default=3.0, gt=0)
    read_timeout: float = Field(default=20.0, gt=0)
    max_pool_connections: int = Field(default=32, ge=1)

    @property
    def is_local(self) -> bool:
        return self.endpoint_url is not None

    def botocore_config(self) -> Config:
        """One Config for every client: botocore's retries and bounded waits.

        Locally S3 uses path-style addressing, so presigned URLs point at
        `http://127.0.0.1:PORT/bucket/key` rather than at a hostname that
        does not resolve.
        """
        return Config(
            region_name=self.region,
            retries={"mode": self.retry_mode, "max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            tcp_keepalive=True,
            s3={"addressing_style": "path"} if self.is_local else None,
        )

    def boto3_session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `boto3.Session`: dummy credentials only locally."""
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.is_local:
            kwargs["aws_access_key_id"] = LOCAL_CREDENTIAL
            kwargs["aws_secret_access_key"] = LOCAL_CREDENTIAL
        return kwargs

    def boto3_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `session.client(...)`: no `endpoint_url` key
        at all for real AWS, so boto3's own endpoint resolution applies."""
        kwargs: dict[str, Any] = {"config": self.botocore_config()}
        if self.endpoint_url is not None:
            kwargs["endpoint_url"] = self.endpoint_url
        return kwargs

    def session(self) -> boto3.Session:
        """A new session (sessions are not thread-safe; clients are)."""
        return boto3.Session(**self.boto3_session_kwargs())

    @overload
    def client(self, service: Literal["dynamodb"]) -> DynamoDBClient: ...
    @overload
    def client(self, service: Literal["s3"]) -> S3Client: ...
    @overload
    def client(self, service: Literal["sqs"]) -> SQSClient: ...
    @overload
    def client(self, service: Literal["kms"]) -> KMSClient: ...
    @overload
    def client(self, service: Literal["events"]) -> EventBridgeClient: ...
    @overload
    def client(self, service: Literal["timestream-write"]) -> TimestreamWriteClient: ...
    @overload
    def client(self, service: str) -> BaseClient: ...
    def client(self, service: str) -> Any:
        """A new client for `service`. Building one costs tens of milliseconds:
        create it once per component and share it (clients are thread-safe).

        Clients come from one shared session per settings value, created and
        used under a lock (sessions are not thread-safe), so the service
        models are parsed once per process rather than once per client.
        """
        with _SESSION_LOCK:
            session: Any = _SESSIONS.get(self)  # stubs' overloads take literal names only
            if session is None:
                session = _SESSIONS[self] = self.session()
            return session.client(service, **self.boto3_client_kwargs())


_SESSION_LOCK = threading.Lock()
_SESSIONS: dict[AwsSettings, boto3.Session] = {}


class ApiSettings(_Model):
    url: str
    # The API process's own Prometheus endpoint (`{url}/metrics`, answered by
    # the local HTTP adapter, not the API); None where there is none (AWS).
    metrics_url: str | None = None
    # The file holding the fleet manager's API key, the CLI's default credential
    # (0600, never the key itself here).
    key_file: Path | None = None
    # One key file per role (viewer, fleet_manager, approver, operator), each
    # 0600: `v2c.infra.local.api_credentials`; the CLI picks one with `--as ROLE`.
    key_files: dict[str, Path] = Field(default_factory=dict)


class GatewaySettings(_Model):
    metrics_url: str | None = None
    # The gateway's shared-subscription group; not a secret: the broker lets
    # only services subscribe to `$share/...` (see `stack_layout.stack_share_group`).
    share_group: str | None = None


class StackSettings(_Model):
    """Everything a command needs to find the running stack."""

    version: Literal[1] = 1
    mqtt: MqttSettings | None = None
    aws: AwsSettings = AwsSettings()
    resources: ResourceNames = ResourceNames()
    api: ApiSettings | None = None
    gateway: GatewaySettings | None = None
    # PIDs of the daemons `v2c stack up` started, so `v2c stack down` can stop them.
    processes: dict[str, int] = Field(default_factory=dict)

    def require_mqtt(self) -> MqttSettings:
        if self.mqtt is None:
            raise ConfigurationError("the stack description has no MQTT broker (mqtt section)")
        return self.mqtt


def read_settings(path: Path) -> StackSettings:
    """Parse one stack.json; relative certificate paths are taken relative to
    the file's directory, so a stack directory can be moved as a whole."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StackNotFound(f"no stack description at {path}") from exc
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read stack description {path}: {exc}") from exc
    try:
        settings = StackSettings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid stack description {path}: {exc}") from exc
    base = path.parent.absolute()  # absolute: a daemon that changes directory still finds them
    return _map_mqtt_paths(settings, lambda p: p if p.is_absolute() else base / p)


def write_settings(settings: StackSettings, stack_dir: Path) -> Path:
    """Write `stack_dir/stack.json` atomically (temp file, fsync, os.replace):
    a reader never sees half a file, even if the writer is killed."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    target = stack_dir / STACK_FILE
    base = stack_dir.resolve()
    portable = _map_mqtt_paths(settings, lambda p: _relative_to(p, base))
    text = portable.model_dump_json(indent=2) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=".stack-", suffix=".json.tmp", dir=stack_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def load_settings(
    stack_dir: Path | str | None = None,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> StackSettings:
    """The settings for this invocation (see the module docstring for the order).

    `stack_dir`, `endpoint_url` and `region` are the command-line flags
    (None = not given). `environ` and `cwd` default to the process's own.
    """
    env = os.environ if environ is None else environ
    endpoint = _first(endpoint_url, env.get(ENV_ENDPOINT_URL))
    region_value = _first(region, *(env.get(name) or None for name in ENV_REGION))
    api_url = env.get(ENV_API_URL) or None

    settings = _settings_from_file(stack_dir, env, cwd or Path.cwd(), fileless_ok=endpoint)
    aws_update: dict[str, Any] = {}
    if endpoint is not None:
        aws_update["endpoint_url"] = (
            None if endpoint.strip().lower() in REAL_AWS_WORDS else endpoint
        )
    if region_value is not None:
        aws_update["region"] = region_value
    update: dict[str, Any] = {}
    if aws_update:
        update["aws"] = settings.aws.model_copy(update=aws_update)
    if api_url is not None:
        update["api"] = ApiSettings(url=api_url)
    return settings.model_copy(update=update) if update else settings


def _settings_from_file(
    flag_dir: Path | str | None, env: Mapping[str, str], cwd: Path, *, fileless_ok: str | None
) -> StackSettings:
    if flag_dir is not None:
        return read_settings(Path(flag_dir) / STACK_FILE)
    env_dir = env.get(ENV_STACK_DIR)
    if env_dir:
        return read_settings(Path(env_dir) / STACK_FILE)
    default = cwd / DEFAULT_STACK_DIR / STACK_FILE
    if default.is_file():
        return read_settings(default)
    if fileless_ok is not None:
        return StackSettings()
    raise StackNotFound(
        f"no stack description: pass --stack-dir, set {ENV_STACK_DIR}, run `v2c stack up` "
        f"(writes {default}), or set {ENV_ENDPOINT_URL} (`aws` for real AWS)"
    )


def _first(*values: str | None) -> str | None:
    for value in values:
        if value is not None:
            return value
    return None


def _relative_to(path: Path, base: Path) -> Path:
    try:
        return path.resolve().relative_to(base)
    except ValueError:
        return path


def _map_mqtt_paths(settings: StackSettings, fn: Callable[[Path], Path]) -> StackSettings:
    mqtt = settings.mqtt
    if mqtt is None:
        return settings
    fields = ("ca_file", "service_cert", "service_key", "admin_cert", "admin_key")
    changed = {f: fn(getattr(mqtt, f)) for f in fields if getattr(mqtt, f) is not None}
    return settings.model_copy(update={"mqtt": mqtt.model_copy(update=changed)})
