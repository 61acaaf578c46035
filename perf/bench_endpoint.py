"""Load test of the HTTP endpoint: `cp-dist serve`'s Ray Serve deployment under concurrent clients.

Ranking requests (one user, --candidates items by id, users and items drawn from the test split)
are sent by a bounded number of concurrent clients (--concurrency, each for --seconds), one request
in flight per client. Per level: requests/s, p50/p99/p99.9 latency as the client sees it, errors
(anything but 200), and how many requests shared a forward pass (the endpoint's own counters). The
in-process call (Ranker.score, the same requests, one at a time) is measured in the same run first:
the floor the endpoint's overhead is stated against.

The whole benchmark runs inside a network namespace that has only loopback (it re-executes itself
there), so Ray and the endpoint are reachable from this machine only.

    python perf/bench_endpoint.py                                  # make bench-endpoint (~3 min)
    python perf/bench_endpoint.py --run RUN --data DIR --concurrency 1 8 64 --seconds 20

Prints a table and writes perf/results/endpoint_<device>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402
from report import new_figure, save_figure, write_markdown  # noqa: E402

from cp_dist.data.fetch import cache_root  # noqa: E402
from cp_dist.data.meta import DatasetMeta  # noqa: E402
from cp_dist.io import write_json  # noqa: E402
from cp_dist.ray_cluster import private_token_env  # noqa: E402
from cp_dist.serving.loopback import run_on_loopback  # noqa: E402
from cp_dist.serving.ranking import Ranker  # noqa: E402
from cp_dist.serving.settings import ServeSettings  # noqa: E402

INSIDE = "CP_DIST_BENCH_ON_LOOPBACK"


def _requests(data: Path, candidates: int, count: int) -> list[dict]:
    """`count` ranking requests: the user of test row r, the items of the next `candidates` rows."""
    meta = DatasetMeta.load(data)
    table = pq.read_table(data / "test.parquet", columns=[f.text_column for f in meta.fields]).to_pylist()
    key = next(f for f in meta.fields if f.side == "item")
    users = [f for f in meta.fields if f.side != "item"]
    return [{"user": {f.name: table[(r * 97) % len(table)][f.text_column] for f in users},
             "items": [table[(r * candidates + i) % len(table)][key.text_column] for i in range(candidates)]}
            for r in range(count)]


def _percentiles(seconds: list[float]) -> dict:
    ms = 1e3 * np.asarray(seconds)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "p999_ms": float(np.percentile(ms, 99.9))}


def _in_process(ranker: Ranker, requests: list[dict], seconds: float) -> dict:
    """The library call on the same requests, one at a time: the floor."""
    for request in requests[:3]:
        ranker.score(request["user"], request["items"])
    total, encode, started = [], [], time.perf_counter()
    for request in requests * 100:
        start = time.perf_counter()
        inputs = ranker.inputs(request["user"], request["items"])
        encoded = time.perf_counter()
        ranker.scorer.probabilities(*inputs)
        total.append(time.perf_counter() - start)
        encode.append(encoded - start)
        if time.perf_counter() - started > seconds:
            break
    return {"requests": len(total), "requests_per_s": len(total) / sum(total), **_percentiles(total),
            "encode_p50_ms": 1e3 * float(np.median(encode))}


async def _load(url: str, requests: list[dict], clients: int, seconds: float, replicas: int) -> dict:
    """`clients` concurrent clients, each sending one request after another for `seconds`."""
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def client(session: aiohttp.ClientSession, index: int, deadline: float) -> None:
        sent = 0
        while time.perf_counter() < deadline:
            request = requests[(index + clients * sent) % len(requests)]
            sent += 1
            start = time.perf_counter()
            try:
                async with session.post(f"{url}/rank", json=request) as response:
                    body = await response.json()
                    ok = response.status == 200 and len(body["scores"]) == len(request["items"])
                    if not ok:
                        errors[str(response.status)] = errors.get(str(response.status), 0) + 1
            except (TimeoutError, aiohttp.ClientError) as err:
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                continue
            if ok:
                latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        before = await (await session.get(f"{url}/ready")).json()
        started = time.perf_counter()
        await asyncio.gather(*(client(session, i, started + seconds) for i in range(clients)))
        elapsed = time.perf_counter() - started
        after = await (await session.get(f"{url}/ready")).json()
    # the counters are the answering replica's: with several, the two readings may come from different ones
    passes = after["forward_passes"] - before["forward_passes"]
    per_pass = (after["requests_scored"] - before["requests_scored"]) / max(passes, 1) if replicas == 1 else None
    return {"concurrency": clients, "requests": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
            "seconds": elapsed, "requests_per_s": len(latencies) / elapsed, **_percentiles(latencies or [float("nan")]),
            "requests_per_forward_pass": per_pass}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/quickstart/seed0/clickprompt-no-plm"),
                        help="a finished CTR-only run (default: %(default)s, from `make run`)")
    parser.add_argument("--data", type=Path, help="its prepared data (default: CACHE/prepared/ml-100k)")
    parser.add_argument("--candidates", type=int, default=1024, help="items per ranking request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=15.0, help="load time per concurrency level")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-ongoing-requests", type=int, default=ServeSettings.max_ongoing_requests)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in process and per replica")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--results", type=Path, default=Path("perf/results"))
    args = parser.parse_args()
    if os.environ.get(INSIDE) != "1":  # re-run on loopback only
        done = run_on_loopback([sys.executable, *sys.argv], timeout=3600, env={**os.environ, INSIDE: "1", **private_token_env()})
        sys.exit(done.returncode)

    from cp_dist.serving import endpoint

    data = args.data or cache_root() / "prepared" / "ml-100k"
    settings = ServeSettings(port=args.port, replicas=args.replicas, threads=args.threads, max_batch_size=args.max_batch_size,
                             batch_wait_ms=args.batch_wait_ms, max_ongoing_requests=args.max_ongoing_requests,
                             max_candidates=max(args.candidates, 1))
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    requests = _requests(data, args.candidates, 200)
    floor = _in_process(Ranker.from_run(args.run, data), requests, args.seconds)
    print(f"in process: p50 {floor['p50_ms']:.3f} ms, p99 {floor['p99_ms']:.3f} ms "
          f"(encoding p50 {floor['encode_p50_ms']:.3f} ms)", flush=True)
    started = time.perf_counter()
    url = endpoint.start(args.run, data, settings)
    startup_s = time.perf_counter() - started
    levels = []
    for clients in args.concurrency:
        levels.append(asyncio.run(_load(url, requests, clients, args.seconds, args.replicas)))
        level = levels[-1]
        print(f"{clients:>4} clients: {level['requests_per_s']:8.1f} requests/s  p50 {level['p50_ms']:8.2f} ms  "
              f"p99 {level['p99_ms']:8.2f} ms  errors {level['errors']}", flush=True)
    endpoint.serve.shutdown()
    machine = describe_machine()
    result = {"benchmark": "endpoint_load", "device": "cpu", "run": str(args.run), "data": str(data),
              "candidates": args.candidates, "settings": settings.__dict__, "startup_s": startup_s,
              "in_process": floor, "levels": levels, "machine": machine, "command": " ".join(sys.argv)}
    stem = args.results / "endpoint_cpu"
    write_json(stem.with_suffix(".json"), result)
    summary = _summary(result)
    write_markdown(stem.with_suffix(".md"), summary)
    _plot(result, stem.with_suffix(".png"))
    print("\n" + summary + f"\nwrote {stem}.json, .md and .png")


def _summary(result: dict) -> str:
    machine, floor, settings = result["machine"], result["in_process"], result["settings"]
    lines = [
        f"Endpoint load test on {machine['cpu']} ({machine['cpu_count']} cores): ranking requests of "
        f"{result['candidates']} candidates to `cp-dist serve` ({settings['replicas']} replica, {settings['threads']} torch "
        f"thread, batches of up to {settings['max_batch_size']} requests waiting {settings['batch_wait_ms']} ms), "
        "clients and server on this machine, over loopback. Latency as the client sees it; 'per pass': requests "
        "per forward pass; 'overhead': p50 over the in-process call's p50.",
        "",
        "| clients | requests | errors | requests/s | p50 ms | p99 ms | p99.9 ms | per pass | overhead |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| in process | {floor['requests']} | 0 | {floor['requests_per_s']:.1f} | {floor['p50_ms']:.2f} | "
        f"{floor['p99_ms']:.2f} | {floor['p999_ms']:.2f} | 1 | 1.00x |",
    ]
    lines += [f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {_per_pass(r)} | "
              f"{r['p50_ms'] / floor['p50_ms']:.2f}x |" for r in result["levels"]]
    lines += ["", f"In process, encoding a request (host side): p50 {floor['encode_p50_ms']:.3f} ms. "
              f"Endpoint start-up: {result['startup_s']:.0f} s.", "", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def _per_pass(level: dict) -> str:
    return "–" if level["requests_per_forward_pass"] is None else f"{level['requests_per_forward_pass']:.1f}"


def _plot(result: dict, path: Path) -> None:
    figure, (latency, throughput) = new_figure(11, 4.5, columns=2)
    levels, floor = result["levels"], result["in_process"]
    clients = [r["concurrency"] for r in levels]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
        latency.plot(clients, [r[key] for r in levels], marker="o", label=f"endpoint {label}")
    latency.axhline(floor["p50_ms"], color="grey", linestyle="--", label="in process p50")
    latency.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)",
                title=f"Ranking {result['candidates']} candidates")
    throughput.plot(clients, [r["requests_per_s"] for r in levels], marker="o", label="endpoint")
    throughput.axhline(floor["requests_per_s"], color="grey", linestyle="--", label="in process, one at a time")
    throughput.set(xscale="log", xlabel="concurrent clients", ylabel="requests/s", title="Throughput")
    for axis in (latency, throughput):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    save_figure(figure, path)


if __name__ == "__main__":
    main()
