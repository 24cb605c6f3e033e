"""Load on the live service over loopback, at rising rates (run by hand).

    .venv/bin/python benchmarks/service_load.py [--rates 500,1000,2000,3000] [--seconds 5]
        [--batch-size 1000] [--procs 2] [--batch-seconds 8] [--db PATH]

Starts ``weightstream serve`` on a free loopback port over a fresh database (with a key made
for the run), then:

1. single-reading requests, open loop: for each rate, requests are due on a fixed schedule
   for ``--seconds``, sent over ``--connections`` keep-alive connections; each latency is
   measured from the request's due time, so waiting for a free connection counts (no
   coordinated omission);
2. batch requests of ``--batch-size`` readings, closed loop with one request in flight per
   client process, for ``--batch-seconds``;
3. SIGTERM, and a check through SQLite that every reading whose answer was acknowledged (any
   verdict but ``invalid``) is in the store.

The client is httpx, one keep-alive connection per thread, in ``--procs`` processes (an
asyncio httpx client on this machine spent more time per request than the server did, and
measured itself). Prints one JSON object: for each stage the target and achieved rate, p50/p99/max latency,
errors by kind, and the acknowledged-readings check. The whole run is bounded (every stage
has its time; requests time out after 30 s). Readings spread over many users, each user's in
time order, as connected scales send them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

LAUNCH = (
    "import weightstream.cli as c\n"
    "from weightstream.cli import serve, keys\n"
    "names = {i.name for i in c.app.registered_commands} | "
    "{g.name for g in c.app.registered_groups}\n"
    "if 'serve' not in names: serve.register(c.app)\n"
    "if 'keys' not in names: keys.register(c.app)\n"
    "c.main()\n"
)
T0 = datetime(2024, 1, 1, 7, tzinfo=UTC)


@dataclass
class Readings:
    """Unique readings over ``users`` users, each user's in time order."""

    users: int
    next_index: dict[int, int] = field(default_factory=dict)
    counter: int = 0
    prefix: str = ""

    def one(self) -> dict[str, Any]:
        self.counter += 1
        user = self.counter % self.users
        i = self.next_index.get(user, 0)
        self.next_index[user] = i + 1
        return {
            "id": f"{self.prefix}b{user}-{i}",
            "user_id": f"{self.prefix}user-{user}",
            "timestamp": (T0 + timedelta(hours=6 * i)).isoformat(),
            "weight": round(60.0 + (user % 50) + 0.05 * (i % 7), 2),
            "unit": "kg",
            "source": "patient-device",
        }


@dataclass
class Stage:
    name: str
    target: float | None
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    readings: int = 0
    acked: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

        ok = len(lat)
        return {
            "stage": self.name,
            "target_per_s": self.target,
            "seconds": round(self.seconds, 2),
            "requests_ok": ok,
            "requests_per_s": round(ok / self.seconds, 1) if self.seconds else None,
            "readings_per_s": round(self.readings / self.seconds, 1) if self.seconds else None,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "errors": dict(self.errors),
        }


def _send(client: httpx.Client, stage: Stage, body: dict[str, Any], started: float) -> None:
    try:
        r = client.post("/v1/measurements", json=body)
    except httpx.TransportError as exc:
        with stage.lock:
            stage.errors[type(exc).__name__] += 1
        return
    latency = time.perf_counter() - started
    with stage.lock:
        if r.status_code != 200:
            stage.errors[f"http_{r.status_code}"] += 1
            return
        stage.latencies.append(latency)
        results = r.json()["results"]
        stage.readings += len(results)
        for res in results:
            if res["verdict"] == "invalid":
                stage.errors["invalid_reading"] += 1
            else:
                stage.acked.add(res["reading_id"])


def open_loop(
    clients: list[httpx.Client], readings: Readings, rate: float, seconds: float
) -> Stage:
    """Requests due on a fixed schedule, sent by one thread per connection.

    Each thread takes the next due time, waits for it, sends, and counts the latency from the
    due time: a request that could not start on time (every connection busy) is late by that
    much, so queueing in the client counts (no coordinated omission), while the client never
    holds more requests than connections.
    """
    stage = Stage(f"single@{rate:g}/s", rate)
    interval = 1.0 / rate
    total = int(rate * seconds)
    begin = time.perf_counter()
    slots = iter(range(total))
    take = threading.Lock()

    def worker(client: httpx.Client) -> None:
        while True:
            with take:
                slot = next(slots, None)
                body = readings.one() if slot is not None else None
            if slot is None or body is None:
                return
            due = begin + slot * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            _send(client, stage, body, due)

    _run_threads(worker, clients)
    stage.seconds = time.perf_counter() - begin
    stage.requests = total
    return stage


def closed_loop(
    clients: list[httpx.Client], readings: Readings, size: int, seconds: float
) -> Stage:
    """Batch requests of ``size`` readings, one in flight per connection, for ``seconds``."""
    stage = Stage(f"batch{size}", None)
    begin = time.perf_counter()
    take = threading.Lock()

    def worker(client: httpx.Client) -> None:
        while time.perf_counter() - begin < seconds:
            with take:
                body = {"readings": [readings.one() for _ in range(size)]}
                stage.requests += 1
            _send(client, stage, body, time.perf_counter())

    _run_threads(worker, clients)
    stage.seconds = time.perf_counter() - begin
    return stage


def _run_threads(worker: Any, clients: list[httpx.Client]) -> None:
    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "serve", "--db", str(db), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def _client_process(
    args: tuple[str, str, int, list[tuple[str, float, float]], int, int],
) -> list[Stage]:
    """One client process: ``connections`` keep-alive connections, each driven by a thread."""
    url, key, connections, plan, proc, users = args
    readings = Readings(users)
    readings.prefix = f"p{proc}-"
    clients = [
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        for _ in range(connections)
    ]
    stages: list[Stage] = []
    try:
        for kind, amount, seconds in plan:
            if kind == "warmup":
                open_loop(clients, readings, amount, seconds)
            elif kind == "single":
                stages.append(open_loop(clients, readings, amount, seconds))
            else:
                stages.append(closed_loop(clients[:1], readings, int(amount), seconds))
    finally:
        for c in clients:
            c.close()
    for stage in stages:
        stage.lock = None  # type: ignore[assignment]  # not picklable; the parent merges
    return stages


def drive(args: argparse.Namespace, url: str, key: str) -> list[Stage]:
    """Drive the plan from ``--procs`` client processes (a Python client is slower than the
    server: one process cannot offer thousands of requests a second); merge their stages."""
    from concurrent.futures import ProcessPoolExecutor

    n = args.procs
    plan: list[tuple[str, float, float]] = [("warmup", 50 / n, 1.0)]
    plan += [("single", rate / n, args.seconds) for rate in args.rates]
    # Batch stage: --batch-concurrency requests in flight in all, spread over the processes.
    batch_plans = [
        [
            *plan,
            *([("batch", args.batch_size, args.batch_seconds)] if args.batch_seconds > 0 else []),
        ]
        for _ in range(n)
    ]
    jobs = [
        (url, key, max(1, args.connections // n), batch_plans[i], i, args.users // n)
        for i in range(n)
    ]
    with ProcessPoolExecutor(n) as pool:
        per_process = list(pool.map(_client_process, jobs))
    merged: list[Stage] = []
    for parts in zip(*per_process, strict=True):
        stage = Stage(
            parts[0].name.split("@")[0]
            if parts[0].target is None
            else f"single@{parts[0].target * n:g}/s",
            None if parts[0].target is None else parts[0].target * n,
        )
        if parts[0].target is None:
            stage.name = f"batch{args.batch_size}x{n}"
        for part in parts:
            stage.latencies += part.latencies
            stage.errors.update(part.errors)
            stage.requests += part.requests
            stage.readings += part.readings
            stage.acked |= part.acked
            stage.seconds = max(stage.seconds, part.seconds)
        merged.append(stage)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,2000,3000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--batch-seconds", type=float, default=8.0)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32, help="in all")
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r]

    from weightstream.service import Scope, open_keys

    work = Path(tempfile.mkdtemp(prefix="ws-load-"))
    db = args.db or work / "load.db"
    keys = open_keys(db)
    key = keys.create([Scope.READ, Scope.WRITE], "load benchmark").secret
    keys.close()
    port = _free_port()
    proc = _start(db, port, work / "server.log")
    try:
        stages = drive(args, f"http://127.0.0.1:{port}", key)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    acked = set().union(*(s.acked for s in stages)) if stages else set()
    conn = sqlite3.connect(db)
    stored = {k for (k,) in conn.execute("SELECT key FROM readings")}
    conn.close()
    lost = acked - stored
    print(
        json.dumps(
            {
                "stages": [s.report() for s in stages],
                "acknowledged_readings": len(acked),
                "acknowledged_missing_from_store": len(lost),
                "server_exit": code,
                "cpu_count": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
