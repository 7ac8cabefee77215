"""What the API process (`v2c api serve`) adds to its `/metrics`.

The API process is where campaigns are created, signed, started, cancelled
and rolled back, and where the monitor runs (timeouts, stalls): the OTA
recording functions count into prometheus_client's default REGISTRY there,
as they do in the gateway for the status reports it ingests. Besides those,
it registers what is read when scraped:

* the campaign gauges (`v2c.handlers.ota.campaign_metrics.CampaignCollector`
  over the OTA services' campaign store);
* `v2c_dlq_depth{queue}` for the stack's three dead-letter stores;
* `v2c_certificate_expiry_days{subject}` for the stack's own certificates:
  `fleet_ca` (the CA that signs every vehicle's certificate) and `service`
  (the soonest of the service identity and the broker's server certificate):
  read from their PEM files on each scrape, so a renewed file shows at once.
  `vehicle_min` is the gateway's, from the rotation function's expiry pass;
* `v2c_signing_available{backend}`, probed at start and then every
  `SIGNER_PROBE_INTERVAL_S` (`probe_signer_every`, on its own thread in
  `v2c api serve`) with `Signer.probe`, which reaches the backend past the
  cached public key: a transient failure no longer leaves the gauge at 0
  until the next campaign is signed. Its own thread, because a hung HSM
  holds a probe for its timeouts and retries (about 17 s), which must
  delay neither the monitor nor a scrape.

`install_api_metrics` is the one call `v2c api serve` makes; the HTTP
adapter serves the registry (`ApiHttpServer(metrics=...)`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Final

from cryptography import x509
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from v2c.handlers.dlq.metrics import DeadLetterDepthCollector
from v2c.handlers.dlq.store import DeadLetterStore
from v2c.handlers.ota.campaign_metrics import CampaignCollector, recent_campaigns
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.vehicles.metrics import certificate_metrics
from v2c.infra.settings import StackSettings

log = logging.getLogger(__name__)

DAY_S: Final = 86_400.0
SIGNER_PROBE_INTERVAL_S: Final = 60.0  # at most one probe a minute
FLEET_CA: Final = "fleet_ca"
SERVICE: Final = "service"

MetricsAnswer = tuple[str, bytes]  # (content type, body)


def registry_answer(registry: CollectorRegistry = REGISTRY) -> Callable[[], MetricsAnswer]:
    """The callable the HTTP adapter answers `GET /metrics` with."""

    def answer() -> MetricsAnswer:
        return CONTENT_TYPE_LATEST, generate_latest(registry)

    return answer


def days_left(paths: Sequence[Path], now_s: float) -> float:
    """Days until the soonest of the PEM certificates at `paths` expires
    (negative once expired); NaN when none can be read, never an error (a
    scrape must not fail on a file being rewritten)."""
    soonest: float | None = None
    for path in paths:
        try:
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            log.warning("certificate %s not readable for its expiry", path)
            continue
        ends = certificate.not_valid_after_utc.astimezone(UTC).timestamp()
        soonest = ends if soonest is None else min(soonest, ends)
    return math.nan if soonest is None else round((soonest - now_s) / DAY_S, 3)


def stack_certificates(settings: StackSettings) -> dict[str, list[Path]]:
    """The stack's own certificate files by subject (none without TLS)."""
    mqtt = settings.mqtt
    if mqtt is None or mqtt.ca_file is None:
        return {}
    pki = mqtt.ca_file.parent
    service = [p for p in (mqtt.service_cert, pki / "server.pem") if p is not None]
    return {FLEET_CA: [pki / "ca.pem"], SERVICE: service}


def watch_certificates(
    files: Mapping[str, Sequence[Path]],
    registry: CollectorRegistry = REGISTRY,
    clock: Callable[[], float] = time.time,
) -> None:
    """Each subject's days left, computed when scraped (`set_function`), on
    the registry's one `v2c_certificate_expiry_days` gauge."""
    gauge = certificate_metrics(registry).expiry_days
    for subject, paths in files.items():
        gauge.labels(subject).set_function(_days_left_of(list(paths), clock))


def _days_left_of(paths: list[Path], clock: Callable[[], float]) -> Callable[[], float]:
    return lambda: days_left(paths, clock())


def probe_signer(services: OtaServices) -> None:
    """Reach the signer once (`Signer.probe`): its hooks set
    `v2c_signing_available` (1, or 0 and a failure counted)."""
    try:
        services.deps.signer.probe()
    except Exception as exc:  # the API still serves; creations will say 503
        log.warning("signing backend probe failed: %s", exc)


def probe_signer_every(
    services: OtaServices,
    stop: threading.Event,
    interval_s: float = SIGNER_PROBE_INTERVAL_S,
) -> None:
    """Probe the signer every `interval_s` until `stop` is set (the first
    probe is `install_api_metrics`'s, at start)."""
    while not stop.wait(interval_s):
        probe_signer(services)


def install_api_metrics(
    settings: StackSettings,
    services: OtaServices,
    dead_letters: Mapping[str, DeadLetterStore],
    registry: CollectorRegistry = REGISTRY,
) -> Callable[[], MetricsAnswer]:
    """Register the API process's collectors; the adapter's `/metrics` answer."""
    registry.register(CampaignCollector(recent_campaigns(services.deps.campaigns)))
    registry.register(DeadLetterDepthCollector(dead_letters))
    watch_certificates(stack_certificates(settings), registry)
    probe_signer(services)
    return registry_answer(registry)
