"""One measured phase: a sink process, publisher processes, and a start signal.

Protocol, all over one queue of `(kind, name, body)` tuples:
1. the sink starts, subscribes, proves its subscription is live and says "ready";
2. meanwhile the publishers start, connect and say "ready" (they wait for `go`,
   so starting them alongside the sink only saves their start-up time);
3. the coordinator notes the time and the broker's CPU, and sets `go`;
4. every process sends one "result" (or an "error" with its traceback).

Processes are spawned, not forked: each gets a fresh interpreter and its own
GIL, as a separately deployed gateway or vehicle would have.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from typing import Any, Final

from v2c.infra.bench.common import BenchError, JsonDict, process_cpu_s
from v2c.infra.bench.load import PublisherSpec, publisher_main

SINK: Final = "sink"
_POLL_S: Final = 0.25


@dataclass
class PhaseOutcome:
    """Raw timings of one phase; `go_at` and every `*_at` are `time.monotonic()`."""

    go_at: float
    sink: JsonDict
    publishers: dict[str, JsonDict] = field(default_factory=dict)
    broker_cpu_s: float | None = None

    @property
    def sent(self) -> int:
        return sum(int(p["sent"]) for p in self.publishers.values())

    @property
    def publish_s(self) -> float:
        """From `go` until the last publisher had every PUBACK."""
        return max(float(p["finished_at"]) for p in self.publishers.values()) - self.go_at

    @property
    def publisher_cpu_s(self) -> float:
        return sum(float(p["cpu_s"]) for p in self.publishers.values())


class _Processes:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.procs: dict[str, SpawnProcess] = {}

    def start(self, name: str, proc: SpawnProcess) -> None:
        proc.start()
        self.procs[name] = proc

    def expect(self, kind: str, names: set[str], deadline: float) -> dict[str, JsonDict]:
        """Wait for one `kind` message from each of `names`; fail fast on errors."""
        got: dict[str, JsonDict] = {}
        while names - got.keys():
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {kind} from {sorted(names - got.keys())}")
            try:
                msg_kind, name, body = self.out.get(timeout=_POLL_S)
            except queue.Empty:
                self._check_alive(names - got.keys())
                continue
            if msg_kind == "error":
                raise BenchError(f"{name} failed:\n{body.get('traceback', body)}")
            if msg_kind == kind:
                got[name] = body
        return got

    def _check_alive(self, waiting: set[str]) -> None:
        for name in waiting:
            proc = self.procs.get(name)
            if proc is not None and proc.exitcode is not None:
                raise BenchError(f"{name} exited with code {proc.exitcode} before reporting")

    def stop(self, timeout: float = 10.0) -> None:
        """Join every process; terminate one that outlives `timeout` (only ours)."""
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def run_phase(
    sink_main: Callable[[Any, Any], None],
    sink_spec: Any,
    publishers: Sequence[PublisherSpec],
    *,
    broker_pid: int | None,
    timeout_s: float,
) -> PhaseOutcome:
    """Run `sink_main(sink_spec, out)` against `publishers` and collect the raw outcome.

    `sink_main` must put ("ready", "sink", {}) once its subscription is live and
    ("result", "sink", {...}) when it has seen what it waited for.
    """
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()
    processes = _Processes(out)
    deadline = time.monotonic() + timeout_s
    try:
        processes.start(SINK, ctx.Process(target=sink_main, args=(sink_spec, out), name=SINK))
        for spec in publishers:
            proc = ctx.Process(target=publisher_main, args=(spec, go, out), name=spec.name)
            processes.start(spec.name, proc)
        processes.expect("ready", {SINK} | {p.name for p in publishers}, deadline)
        cpu_before = process_cpu_s(broker_pid)
        go_at = time.monotonic()
        go.set()
        results = processes.expect("result", {SINK} | {p.name for p in publishers}, deadline)
        cpu_after = process_cpu_s(broker_pid)
    except BaseException:
        processes.stop(timeout=0)
        raise
    else:
        processes.stop()
    finally:
        out.close()
        out.join_thread()
    sink = results.pop(SINK)
    broker_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return PhaseOutcome(go_at=go_at, sink=sink, publishers=results, broker_cpu_s=broker_cpu)
