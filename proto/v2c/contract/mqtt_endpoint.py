"""Where the broker is and how to prove who we are to it."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def uses_tls(self) -> bool:
        return self.ca_file is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """Mutual TLS when a CA is given: we check the broker, it checks our certificate."""
        if self.ca_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context
