"""Serving under load: our HTTP API and plain ``send_task`` against Infinity, side by side.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve.py [--requests 40] [--rounds 3]

Infinity (``infinity-emb`` 0.0.78, torch engine) is the peer: it is installed into its own
virtualenv, ``benchmarks/.venv-infinity`` (it pins numpy < 2 and sentence-transformers < 4,
so it cannot share ours), when missing, and serves the same minilm folder, offline.
Ours: a real ``embedctl worker --queues embed`` (threads pool, batching) on loopback Redis,
and ``embedctl serve`` in front of it (coalescing, cache in its own Redis database).

The same closed-loop load generator drives all three, one after the other in one run, each
system up alone (an idle server still takes CPU from the one measured): C clients, each
sending its next request when the previous one is answered, K texts per request (distinct
code snippets; ``"cache": false`` on our side, so every text is computed). Loads: 32
clients x 1 text, 4 x 32, 1 x 1, and a cache-hit run (texts already in the cache) through
the API. Prints
texts/s, p50/p95/p99 latency and the machine's CPU per text (clients, servers and Redis
together: on 2 busy cores what bounds throughput) per load, the ratios to Infinity, and for 32-text
requests the ratio to our own local ``encode`` of the same requests (the faster of every
core one pass at a time and the embed worker's pass pool). With ``--rounds N``
the systems take turns N times; throughputs are medians over rounds, latencies pooled.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds queue.py: put the repository root first so the stdlib's queue wins.
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedding.data.corpus import code_corpus
from embedding.inference.pass_pool import PassPool
from tests.support import api_server, celery_worker, free_port, redis_url, service_env, stop_process

VENV = ROOT / "benchmarks" / ".venv-infinity"
INFINITY = "infinity-emb[server,torch]==0.0.78"
TORCH = "torch==2.13.0"
LOADS = [(32, 1), (4, 32), (1, 1)]


def ensure_infinity() -> Path:
    """The peer's own virtualenv, created on first use (a few minutes, once)."""
    exe = VENV / "bin" / "infinity_emb"
    if not exe.exists():
        print(f"installing {INFINITY} into {VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, TORCH, INFINITY], check=True)
    return exe


@contextmanager
def infinity_server(folder: str, log_path: Path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    env.pop("PYTHONPATH", None)
    log = log_path.open("wb")
    cmd = [str(ensure_infinity()), "v2", "--model-id", folder, "--served-model-name", "minilm"]
    cmd += ["--engine", "torch", "--device", "cpu", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"infinity exited:\n{log_path.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"infinity not up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


def http_client(base: str, path: str, extra: dict) -> Callable[[list[str]], None]:
    """A per-thread keep-alive connection posting OpenAI-shaped embedding requests."""
    host, port = base.removeprefix("http://").split(":")
    local = threading.local()

    def call(texts: list[str]) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=300)
        body = json.dumps({"model": "minilm", "input": texts, **extra})
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{reply.status}: {data[:300]!r}")

    return call


def closed_loop(call: Callable[[list[str]], None], clients: int, per_client: int, k: int, texts):
    """C clients, each sending ``per_client`` requests of ``k`` texts back to back."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        start.wait()
        for r in range(per_client):
            at = ((c * per_client + r) * k) % max(1, len(texts) - k)
            t0 = time.perf_counter()
            call(texts[at : at + k])
            took = time.perf_counter() - t0
            with lock:
                latencies.append(took)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return clients * per_client * k / wall, sorted(latencies)


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (every process: clients, servers, Redis).

    Per text, under a load that keeps the cores busy, it is what a system costs: on 2 cores,
    throughput is about 2 / (CPU seconds a text). Steal (the VM's host) is not counted."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


def print_peer_ratios(results: dict) -> None:
    peer_results = results["Infinity"]
    for clients, k in LOADS:
        for name in ("ours, HTTP API", "ours, send_task"):
            ours, peer_tps = results[name][(clients, k)][0], peer_results[(clients, k)][0]
            print(f"ratio {name} / Infinity, {clients}x{k} throughput: {ours / peer_tps:.2f}x")
    for name in ("ours, HTTP API", "ours, send_task"):
        p99, peer99 = pct(results[name][(32, 1)][1], 0.99), pct(peer_results[(32, 1)][1], 0.99)
        print(f"ratio {name} / Infinity, 32x1 p99 latency: {p99 / peer99:.2f}x (floor <= 1)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=40, help="requests per client")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate the systems this many times (medians)"
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=None,
        help="EMBEDDING_EMBED_PASSES for our worker (1: one batch at a time on every core)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="EMBEDDING_PRECISION for our worker and our local encode (auto: measured default)",
    )
    parser.add_argument(
        "--peer",
        choices=("infinity", "none"),
        default="infinity",
        help="none: our side only, no Infinity virtualenv (the test suite's quick run)",
    )
    args = parser.parse_args()

    from celery import Celery

    from embedding.inference.encoder import Encoder
    from tests.tiny_models import MINILM_DIR

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    broker, cache = redis_url(15), redis_url(14)
    env = service_env(f"sqlite:///{tmp / 'bench.db'}", broker, tmp, EMBEDDING_CACHE_URL=cache)
    if args.passes is not None:
        env["EMBEDDING_EMBED_PASSES"] = str(args.passes)
    env["EMBEDDING_PRECISION"] = args.precision
    local = Encoder.load(
        "minilm", device="cpu", precision=None if args.precision == "auto" else args.precision
    )
    print(f"our precision: {local.precision}", flush=True)
    texts = code_corpus(max(2000, 32 * 4 * args.requests + 64), seed=7)
    client = Celery(broker=broker, backend=broker)
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")

    def send_task(batch: list[str]) -> None:
        kwargs = {"texts": batch, "model": "minilm", "encoding": "base64", "cache": False}
        client.send_task("embedding.embed", kwargs=kwargs, queue="embed").get(timeout=300)

    pool = PassPool(len(os.sched_getaffinity(0)))

    def local_encode_rate(pool: PassPool | None) -> float:
        """Our local encode of the same 32-text requests, in this process, no server up
        (measured beside idle servers it came out 10x low: their threads take the cores),
        on every core one pass at a time, or on the pass pool the embed worker uses."""
        local.encode(texts[:32], pool=pool)
        t0 = time.perf_counter()
        for r in range(4 * args.requests):
            local.encode(texts[r * 32 : r * 32 + 32], pool=pool)
        return 4 * args.requests * 32 / (time.perf_counter() - t0)

    runs: dict[str, dict[tuple[int, int], list[tuple[float, list[float]]]]] = {}
    cpu_ms: dict[str, dict[tuple[int, int], list[float]]] = {}  # machine CPU ms a text
    local_rates: list[float] = []  # per round: the faster of the two ways to encode locally
    hit_lat: list[float] = []

    def measure(name: str, call: Callable[[list[str]], None]) -> None:
        for _ in range(args.warmup):
            call(texts[:32])
            call(texts[:1])
        for clients, k in LOADS:
            busy = machine_cpu_s()
            run = closed_loop(call, clients, args.requests, k, texts)
            busy = machine_cpu_s() - busy
            runs.setdefault(name, {}).setdefault((clients, k), []).append(run)
            cpu_ms.setdefault(name, {}).setdefault((clients, k), []).append(
                busy * 1000 / (clients * args.requests * k)
            )

    # One system up at a time: an idle server still takes CPU on 2 cores (Infinity's batch
    # loop polls), and whichever ran beside it would pay for it. Rounds alternate the
    # systems, so a slow spell of the machine (throughput here drifts 20 % between runs
    # minutes apart) lands on both sides.
    with_peer = args.peer == "infinity"
    names = ["ours, HTTP API", "ours, send_task"] + (["Infinity"] if with_peer else [])
    for round_no in range(1, args.rounds + 1):
        print(f"round {round_no} of {args.rounds} ...", flush=True)
        rates = {"every core": local_encode_rate(None), "pass pool": local_encode_rate(pool)}
        print(
            "  local encode, 32-text calls: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
        )
        local_rates.append(max(rates.values()))
        with (
            celery_worker(env, tmp / "worker.log", queues="embed", concurrency=None),
            api_server(env, tmp / "api.log") as api,
        ):
            measure(names[0], http_client(api, "/v1/embeddings", {"cache": False}))
            measure(names[1], send_task)
            # Cache hits: the texts are in the cache after one pass; the second is timed.
            cached = http_client(api, "/v1/embeddings", {})
            hot = texts[: args.requests]
            for text in hot:
                cached([text])
            hit_lat += closed_loop(cached, 1, args.requests, 1, hot)[1]
        if with_peer:
            with infinity_server(str(MINILM_DIR), tmp / "infinity.log") as peer:
                measure("Infinity", http_client(peer, "/embeddings", {}))
        if args.rounds > 1 and with_peer:
            ours, theirs = runs[names[0]][(32, 1)][-1][0], runs["Infinity"][(32, 1)][-1][0]
            print(f"  32x1 this round: HTTP API {ours:.1f}, Infinity {theirs:.1f} texts/s")

    # Each load's throughput is the median over rounds; its latencies are every round's.
    results = {
        name: {
            load: (
                statistics.median(tps for tps, _ in rounds_of_load),
                sorted(lat for _, lats in rounds_of_load for lat in lats),
            )
            for load, rounds_of_load in by_load.items()
        }
        for name, by_load in runs.items()
    }
    local_tps = statistics.median(local_rates)
    hit_lat.sort()

    print(
        f"{'load':<22}{'system':<18}{'texts/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms/text':>13}"
    )
    for clients, k in LOADS:
        for name in names:
            tps, lat = results[name][(clients, k)]
            cpu = statistics.median(cpu_ms[name][(clients, k)])
            load = f"{clients} clients x {k} text{'s' if k > 1 else ''}"
            print(
                f"{load:<22}{name:<18}{tps:>9.1f}{pct(lat, 0.5):>9.1f}{pct(lat, 0.95):>9.1f}"
                f"{pct(lat, 0.99):>9.1f}{cpu:>13.1f}"
            )
    print(
        f"{'1 client x 1, cached':<22}{'ours, HTTP API':<18}{'':>9}{pct(hit_lat, 0.5):>9.2f}"
        f"{pct(hit_lat, 0.95):>9.2f}{pct(hit_lat, 0.99):>9.2f}"
    )
    if with_peer:
        print_peer_ratios(results)
    for name in ("ours, HTTP API", "ours, send_task"):
        tps = results[name][(4, 32)][0]
        print(
            f"ratio {name} / local encode, 32-text requests: {tps / local_tps:.2f}x "
            f"(local {local_tps:.1f} texts/s, the faster way; floor >= 0.95)"
        )
    for name in ("ours, HTTP API", "ours, send_task"):
        lat = results[name][(1, 1)][1]
        print(f"ratio {name} 1x1 p99 / p50: {pct(lat, 0.99) / pct(lat, 0.5):.2f}x (floor <= 3)")
    print(f"cache hit through the API: p50 {statistics.median(hit_lat) * 1000:.2f} ms (floor <= 3)")
    print(f"machine: load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
