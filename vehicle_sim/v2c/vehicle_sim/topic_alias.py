"""MQTT 5 topic aliases for one network connection (OASIS MQTT 5.0, 3.3.2.3.4).

A telemetry topic is ~55 bytes and a sample ~200: sending a 2-byte alias
instead saves about a fifth of every packet. The first PUBLISH of a topic on a
connection carries the topic *and* the alias (that sets the mapping); later
ones carry an empty topic and the alias alone.

Mappings live exactly as long as the network connection, whatever the session
does (the spec's "aliases survive reconnections" is wrong: MQTT 5 resets them
on every connection). So a new `TopicAliases` is made for every connection,
and a message queued under one connection must never be resent as
alias-only on the next: the publisher re-publishes from its buffer through
the new connection's aliases instead of letting the client library resend.

Pure: no I/O; the broker's Topic Alias Maximum from CONNACK bounds the
numbers (0: the broker takes none, every topic goes out in full).
"""

from __future__ import annotations

from collections.abc import Iterable


class TopicAliases:
    def __init__(self, maximum: int, aliased: Iterable[str] = ()) -> None:
        """`aliased`: the topics worth an alias; others always go out in full."""
        if maximum < 0:
            raise ValueError("Topic Alias Maximum cannot be negative")
        self.maximum = maximum
        self._wanted = frozenset(aliased)
        self._assigned: dict[str, int] = {}

    def resolve(self, topic: str) -> tuple[str, int | None]:
        """(topic to put in the PUBLISH, alias or None) for the next packet on `topic`.

        Call it in the order the packets are written to the socket: the first
        packet for a topic establishes the mapping the later ones rely on.
        """
        alias = self._assigned.get(topic)
        if alias is not None:
            return "", alias
        if topic not in self._wanted or len(self._assigned) >= self.maximum:
            return topic, None
        alias = len(self._assigned) + 1
        self._assigned[topic] = alias
        return topic, alias

    @property
    def assigned(self) -> dict[str, int]:
        return dict(self._assigned)
