"""Load on the live service over loopback, at rising rates (run by hand).

    .venv/bin/python benchmarks/service_load.py [--rates 500,1000,2000,3000] [--seconds 5]
        [--batch-size 1000] [--per-user 1,20] [--procs 2] [--batch-seconds 8] [--users 2000]
        [--db PATH]

Starts ``weightstream serve`` on a free loopback port over a fresh database (with a key made
for the run), then:

1. single-reading requests, open loop: for each rate, requests are due on a fixed schedule
   for ``--seconds``, sent over ``--connections`` keep-alive connections; each latency is
   measured from the request's due time, so waiting for a free connection counts (no
   coordinated omission);
2. batch requests of ``--batch-size`` readings (``--per-user`` consecutive readings of each
   user in a batch, as a device cloud syncing a backlog sends them; 1: every reading of a
   batch is another user's, the issue's shape; 20: 50 users a batch, closer to what an
   integration sends), closed loop with one request in flight per client process, for
   ``--batch-seconds``; one such stage for each ``--per-user`` given (default both);
3. SIGTERM, and a check through SQLite that every reading whose answer was acknowledged (any
   verdict but ``invalid``) is in the store.

Readings spread over ``--users`` users, each user's in time order, as connected scales send
them; the first reading of a user takes the reset path (a new filter), later ones the common
path, so with many more users than readings most of the run would be first readings.

The client shares the machine's cores with the server, so it is made cheap: plain sockets,
one keep-alive connection per thread, each request's bytes prepared and its answer parsed by
hand (httpx spent more CPU per request than the server did), in ``--procs`` processes. Its
CPU share and the server's are measured per stage (the server's from ``/proc``), so a run
says which side was the bottleneck.

Prints one JSON object: for each stage the target and achieved rate, p50/p99/max latency,
errors by kind, the server's CPU share and CPU per request and per reading (all of it, its
main thread's: HTTP, the routes, the writer; the other threads': deciding and committing on
the store thread), the client's CPU share; the
load average before and after; and the acknowledged-readings check. The whole run is bounded
(every stage has its time; a request times out after 30 s).
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
TIMEOUT_S = 30.0


class ProtocolError(Exception):
    """An answer this client does not read (not HTTP/1.1 with a Content-Length)."""


class RawClient:
    """One keep-alive HTTP/1.1 connection over a plain socket.

    A request is one ``sendall`` of prepared bytes; the answer is read up to its
    Content-Length (the service answers every request with one). A broken connection is
    reopened on the next request.
    """

    def __init__(self, host: str, port: int, key: str | None = None) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._buf = sock, b""
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """(status, body) of one request; raises ``OSError`` or :class:`ProtocolError`."""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        ).encode()
        sock = self._sock or self._connect()
        try:
            sock.sendall(head + self.auth + b"\r\n" + body)
            return self._answer(sock)
        except BaseException:
            self.close()
            raise

    def _answer(self, sock: socket.socket) -> tuple[int, bytes]:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            buf += chunk
            end = buf.find(b"\r\n\r\n", max(0, len(buf) - len(chunk) - 3))
        lines = buf[:end].split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 "):
            raise ProtocolError(lines[0][:40].decode("latin-1"))
        status = int(lines[0][9:12])
        length, close = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise ProtocolError("chunked answer")
        if length is None:
            raise ProtocolError("no Content-Length")
        parts, have = [buf[end + 4 :]], len(buf) - end - 4
        while have < length:
            chunk = sock.recv(max(65536, length - have))
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            parts.append(chunk)
            have += len(chunk)
        rest = b"".join(parts)
        self._buf = rest[length:]
        if close:
            self.close()
        return status, rest[:length]


@dataclass
class Readings:
    """Unique readings over ``users`` users, each user's in time order."""

    users: int
    next_index: dict[int, int] = field(default_factory=dict)
    counter: int = 0
    prefix: str = ""

    def one(self, user: int | None = None) -> dict[str, Any]:
        if user is None:
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

    def batch(self, size: int, per_user: int) -> list[dict[str, Any]]:
        """``size`` readings, ``per_user`` consecutive ones of each user."""
        out: list[dict[str, Any]] = []
        while len(out) < size:
            self.counter += 1
            user = self.counter % self.users
            out += [self.one(user) for _ in range(min(per_user, size - len(out)))]
        return out


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
    #: Wall-clock (epoch) start and end, and the client process's CPU seconds in between.
    began: float = 0.0
    ended: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None
    server_main_cpu: float | None = None

    def report(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

        ok = len(lat)
        wall = self.ended - self.began
        server, main = self.server_cpu, self.server_main_cpu
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
            "server_cpu_share": round(server / wall, 2) if server is not None and wall else None,
            "server_cpu_us_per_request": (
                round(1e6 * server / ok) if server is not None and ok else None
            ),
            "server_cpu_us_per_reading": (
                round(1e6 * server / self.readings, 1)
                if server is not None and self.readings
                else None
            ),
            "server_main_thread_cpu_share": (
                round(main / wall, 2) if main is not None and wall else None
            ),
            "server_main_thread_us_per_reading": (
                round(1e6 * main / self.readings, 1) if main is not None and self.readings else None
            ),
            "server_other_threads_us_per_reading": (
                round(1e6 * (server - main) / self.readings, 1)
                if server is not None and main is not None and self.readings
                else None
            ),
            "client_cpu_share": round(self.client_cpu / wall, 2) if wall else None,
        }


def _send(client: RawClient, stage: Stage, body: bytes, started: float) -> None:
    try:
        status, answer = client.request("POST", "/v1/measurements", body)
    except (OSError, ProtocolError) as exc:
        with stage.lock:
            stage.errors[type(exc).__name__] += 1
        return
    latency = time.perf_counter() - started
    if status != 200:
        with stage.lock:
            stage.errors[f"http_{status}"] += 1
        return
    results = json.loads(answer)["results"]
    acked = [r["reading_id"] for r in results if r["verdict"] != "invalid"]
    with stage.lock:
        stage.latencies.append(latency)
        stage.readings += len(results)
        stage.errors["invalid_reading"] += len(results) - len(acked)
        stage.acked.update(acked)
        if not stage.errors["invalid_reading"]:
            del stage.errors["invalid_reading"]


def _timed(stage: Stage, run: Any) -> Stage:
    stage.began, cpu = time.time(), time.process_time()
    begin = time.perf_counter()
    run()
    stage.seconds = time.perf_counter() - begin
    stage.ended, stage.client_cpu = time.time(), time.process_time() - cpu
    return stage


def open_loop(clients: list[RawClient], readings: Readings, rate: float, seconds: float) -> Stage:
    """Requests due on a fixed schedule, sent by one thread per connection.

    Each thread takes the next due time, waits for it, sends, and counts the latency from the
    due time: a request that could not start on time (every connection busy) is late by that
    much, so queueing in the client counts (no coordinated omission), while the client never
    holds more requests than connections.
    """
    stage = Stage(f"single@{rate:g}/s", rate)
    interval = 1.0 / rate
    total = int(rate * seconds)
    # The bodies are made before the clock starts: the client's time goes to sending.
    bodies = [json.dumps(readings.one()).encode() for _ in range(total)]
    slots = iter(range(total))
    take = threading.Lock()
    begin = 0.0

    def worker(client: RawClient) -> None:
        while True:
            with take:
                slot = next(slots, None)
            if slot is None:
                return
            due = begin + slot * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            _send(client, stage, bodies[slot], due)

    def run() -> None:
        nonlocal begin
        begin = time.perf_counter()
        _run_threads(worker, clients)

    _timed(stage, run)
    stage.requests = total
    return stage


def closed_loop(
    clients: list[RawClient], readings: Readings, size: int, per_user: int, seconds: float
) -> Stage:
    """Batch requests of ``size`` readings, one in flight per connection, for ``seconds``."""
    stage = Stage(f"batch{size} ({per_user} per user)", None)
    take = threading.Lock()
    begin = time.perf_counter()

    def worker(client: RawClient) -> None:
        while time.perf_counter() - begin < seconds:
            with take:
                body = json.dumps({"readings": readings.batch(size, per_user)}).encode()
                stage.requests += 1
            _send(client, stage, body, time.perf_counter())

    def run() -> None:
        nonlocal begin
        begin = time.perf_counter()
        _run_threads(worker, clients)

    return _timed(stage, run)


def _run_threads(worker: Any, clients: list[RawClient]) -> None:
    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(db: Path, port: int, log: Path, workers: int = 1) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    command = ["serve", "--db", str(db), "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    probe = RawClient("127.0.0.1", port)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()}")
        try:
            # Every worker's app has started (the probe alone may reach one of them).
            started = log.read_text(errors="replace").count("Application startup complete.")
            if started >= workers and probe.request("GET", "/healthz")[0] == 200:
                probe.close()
                return proc
        except (OSError, ProtocolError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def _workers(proc: subprocess.Popen[bytes], workers: int) -> list[int]:
    """The worker processes of a server started with ``--workers`` (none for one process)."""
    if workers <= 1:
        return []
    try:
        text = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
    except OSError:
        return []
    # The supervisor's children: the workers, and multiprocessing's resource tracker.
    pids = [int(p) for p in text.split()]
    return [p for p in pids if "resource_tracker" not in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


class CpuSampler:
    """The server's CPU seconds (user + system, from ``/proc``; with ``--workers``, summed over
    the supervisor and its workers), sampled in a thread: the whole processes', and their main
    threads' (the event loop: HTTP, the routes, the writer task), so that the rest is the store
    threads' (deciding and committing)."""

    def __init__(self, pids: list[int], every_s: float = 0.05) -> None:
        self.paths = [f"/proc/{pid}/stat" for pid in pids]
        self.main_paths = [f"/proc/{pid}/task/{pid}/stat" for pid in pids]
        self.tick = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, float]] = []
        self.main_samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _read(self, paths: list[str]) -> float | None:
        total = 0.0
        for path in paths:
            try:
                text = Path(path).read_text()
            except OSError:
                return None
            fields = text[text.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
        return total

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            cpu, main = self._read(self.paths), self._read(self.main_paths)
            if cpu is not None and main is not None:
                now = time.time()
                self.samples.append((now, cpu))
                self.main_samples.append((now, main))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float, *, main: bool = False) -> float | None:
        """CPU seconds the server (``main``: its main thread) used from ``start`` to ``end``
        (epoch seconds)."""
        samples = self.main_samples if main else self.samples
        inside = [cpu for t, cpu in samples if start <= t <= end]
        return inside[-1] - inside[0] if len(inside) >= 2 else None


def _client_process(
    args: tuple[int, str, int, list[tuple[str, float, float, int]], int, int, Any],
) -> list[Stage]:
    """One client process: ``connections`` keep-alive connections, each driven by a thread.

    Every process starts each stage together (``barrier``), so a stage's window holds only
    its own requests (and the server's CPU in it is theirs).
    """
    port, key, connections, plan, proc, users, barrier = args
    readings = Readings(users)
    readings.prefix = f"p{proc}-"
    clients = [RawClient("127.0.0.1", port, key) for _ in range(connections)]
    stages: list[Stage] = []
    try:
        for kind, amount, seconds, per_user in plan:
            barrier.wait(timeout=600)
            if kind == "warmup":
                open_loop(clients, readings, amount, seconds)
            elif kind == "single":
                stages.append(open_loop(clients, readings, amount, seconds))
            else:
                stages.append(closed_loop(clients[:1], readings, int(amount), per_user, seconds))
    finally:
        for c in clients:
            c.close()
    for stage in stages:
        stage.lock = None  # type: ignore[assignment]  # not picklable; the parent merges
    return stages


def drive(args: argparse.Namespace, port: int, key: str) -> list[Stage]:
    """Drive the plan from ``--procs`` client processes; merge their stages."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import Manager

    n = args.procs
    plan: list[tuple[str, float, float, int]] = [("warmup", 200 / n, 2.0, 1)]
    plan += [("single", rate / n, args.seconds, 1) for rate in args.rates]
    if args.batch_seconds > 0:
        plan += [("batch", args.batch_size, args.batch_seconds, k) for k in args.per_user]
    with Manager() as manager, ProcessPoolExecutor(n) as pool:
        barrier = manager.Barrier(n)
        jobs = [
            (port, key, max(1, args.connections // n), plan, i, args.users // n, barrier)
            for i in range(n)
        ]
        per_process = list(pool.map(_client_process, jobs))
    merged: list[Stage] = []
    for parts in zip(*per_process, strict=True):
        single = parts[0].target is not None
        stage = Stage(
            f"single@{parts[0].target * n:g}/s" if single else f"{parts[0].name}x{n}",
            parts[0].target * n if single else None,
        )
        stage.began = min(p.began for p in parts)
        stage.ended = max(p.ended for p in parts)
        for part in parts:
            stage.latencies += part.latencies
            stage.errors.update(part.errors)
            stage.requests += part.requests
            stage.readings += part.readings
            stage.acked |= part.acked
            stage.seconds = max(stage.seconds, part.seconds)
            stage.client_cpu += part.client_cpu
        merged.append(stage)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,2000,3000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--per-user",
        default="1,20",
        help="consecutive readings of a user in a batch; several (1,20): one batch stage each",
    )
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--batch-seconds", type=float, default=8.0)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=32, help="in all")
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=1, help="server processes (serve --workers)")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.per_user = [int(k) for k in args.per_user.split(",") if k]

    from weightstream.service import Scope, open_keys

    work = Path(tempfile.mkdtemp(prefix="ws-load-"))
    db = args.db or work / "load.db"
    keys = open_keys(db)
    key = keys.create([Scope.READ, Scope.WRITE], "load benchmark").secret
    keys.close()
    port = _free_port()
    load_before = os.getloadavg()
    proc = _start(db, port, work / "server.log", args.workers)
    sampler = CpuSampler([proc.pid, *_workers(proc, args.workers)])
    sampler.start()
    try:
        stages = drive(args, port, key)
    finally:
        sampler.stop()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    load_after = os.getloadavg()
    for stage in stages:
        stage.server_cpu = sampler.between(stage.began, stage.ended)
        stage.server_main_cpu = sampler.between(stage.began, stage.ended, main=True)
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
                "users": args.users,
                "workers": args.workers,
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in load_after],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
