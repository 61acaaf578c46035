"""Preparation at scale: the local engine against the Ray engine with 1 and 2 workers, same raw files.

    python perf/bench_prepare.py                                   # 20.95M lines (the paper's 20.1M kept)
    python perf/bench_prepare.py --rows 1000000 4000000 20950000   # driver memory as rows grow
    python perf/bench_prepare.py --rows 1000000 --engines ray      # a quicker look

Each run is the real `cp-dist data prepare` in a child process. The local engine's figure is that
process's peak RSS. For the Ray engine, a Ray head with W CPUs is started first (`ray start`, inside a
loopback-only network namespace: the whole benchmark re-runs itself there), so the child is the driver
alone, as a job submitter on a cluster's head would be; the workers' peak RSS is sampled from /proc
while it runs. Each Ray engine's output is compared with the local engine's: the ID columns, labels
and timestamps of every split row by row, vocab.parquet and meta.json.

Prints a table and writes perf/results/prepare_<format>_<rows>[_<rows>...].{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402
from report import new_figure, save_figure, write_markdown  # noqa: E402

from cp_dist.data.meta import SPLITS, DatasetMeta  # noqa: E402
from cp_dist.io import write_json  # noqa: E402
from cp_dist.ray_cluster import private_token_env  # noqa: E402
from cp_dist.serving.loopback import run_on_loopback  # noqa: E402

#: 4% of synthetic GoodReads lines are unrated and dropped, leaving the paper's 20.1M interactions.
PAPER_ROWS = 20_950_000
INSIDE = "CP_DIST_BENCH_PREPARE_ON_LOOPBACK"
RAY = Path(sys.executable).with_name("ray")


def measured(command: list[str], env: dict | None = None) -> dict:
    """Runs `command` under measure_child.py, a fresh parent, so getrusage sees that command alone."""
    probe = [sys.executable, str(Path(__file__).with_name("measure_child.py")), *command]
    done = subprocess.run(probe, check=True, stdout=subprocess.PIPE, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


class WorkerPeaks:
    """Samples the peak RSS (VmHWM) of every Ray worker process while a run lasts."""

    def __init__(self):
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    command = (proc / "cmdline").read_bytes()  # a busy worker retitles itself "ray::<task>"
                    if b"default_worker.py" not in command and not command.startswith(b"ray::"):
                        continue
                    status = (proc / "status").read_text()
                except OSError:
                    continue
                kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
                self.peaks[int(proc.name)] = max(self.peaks.get(int(proc.name), 0), kib)

    def gib(self) -> dict:
        values = sorted(self.peaks.values(), reverse=True)
        return {"workers_seen": len(values), "largest_worker_peak_gib": round(values[0] / 2**20, 2) if values else None,
                "sum_of_worker_peaks_gib": round(sum(values) / 2**20, 2)}


def run_ray(cli: list[str], workers: int) -> dict:
    """The command as the driver of a `ray start` cluster of `workers` CPUs, and the workers' memory.
    The cluster's processes are pinned to `workers` cores (taskset), so that 1 worker has 1 core even
    on a machine with more: its 0-CPU block reader and Ray Data's helpers would otherwise run on the
    spare ones. The driver is not pinned."""
    pinned = ["taskset", "-c", ",".join(str(core) for core in range(workers))] if workers < (os.cpu_count() or 1) else []
    subprocess.run([*pinned, str(RAY), "start", "--head", "--port=6390", f"--num-cpus={workers}", "--dashboard-host=127.0.0.1",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, stdout=subprocess.DEVNULL)
    try:
        with WorkerPeaks() as peaks:
            result = measured(cli, env={**os.environ, "RAY_ADDRESS": "127.0.0.1:6390"})
        return result | peaks.gib()
    finally:
        subprocess.run([str(RAY), "stop", "--force"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def same_output(ray_dir: Path, local_dir: Path) -> bool:
    """Equal ID columns, labels and timestamps (row by row, in order), vocabularies and meta.json."""
    ray_meta, local_meta = DatasetMeta.load(ray_dir), DatasetMeta.load(local_dir)
    if ray_meta != local_meta or not pq.read_table(ray_dir / "vocab.parquet").equals(pq.read_table(local_dir / "vocab.parquet")):
        return False
    columns = [f.name for f in local_meta.fields] + ["label", "timestamp"]
    return all(ray_meta.read_split(ray_dir, split, columns).equals(pq.read_table(local_dir / f"{split}.parquet", columns=columns))
               for split in SPLITS)


def plot(result: dict, path: Path) -> None:
    figure, (seconds_axis, memory_axis) = new_figure(12, 4.5, columns=2)
    names = sorted({run["engine"] for size in result["sizes"] for run in size["runs"]}, key=lambda n: (n != "local", n))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        xs = [i + k * width for i, size in enumerate(result["sizes"]) for run in size["runs"] if run["engine"] == name]
        seconds = [run["seconds"] for size in result["sizes"] for run in size["runs"] if run["engine"] == name]
        seconds_axis.bar(xs, seconds, width, label=name)
        rows = [size["raw_lines"] / 1e6 for size in result["sizes"] for run in size["runs"] if run["engine"] == name]
        memory = [run["peak_rss_gib"] for size in result["sizes"] for run in size["runs"] if run["engine"] == name]
        memory_axis.plot(rows, memory, marker="o", label=f"{name}: {'driver' if name != 'local' else 'process'}")
    seconds_axis.set_xticks([i + 0.4 - width / 2 for i in range(len(result["sizes"]))],
                            [f"{size['raw_lines'] / 1e6:g}M lines" for size in result["sizes"]])
    seconds_axis.set_ylabel("wall seconds")
    seconds_axis.set_title("prepare: wall time")
    seconds_axis.legend()
    if len(result["sizes"]) > 1:
        memory_axis.set_xscale("log")
    memory_axis.set_ylim(bottom=0)
    memory_axis.set_xlabel("raw lines (millions)")
    memory_axis.set_ylabel("peak RSS (GiB)")
    memory_axis.set_title("peak RSS of the process that runs `cp-dist data prepare`")
    memory_axis.legend()
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", default="goodreads", choices=("goodreads",))
    parser.add_argument("--rows", type=int, nargs="+", default=[PAPER_ROWS], help="raw interaction lines, one run each")
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=("local", "ray"))
    parser.add_argument("--ray-workers", type=int, nargs="+", default=[1, 2], help="CPUs of the Ray cluster, one run each")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_prepare"), help="scratch directory")
    parser.add_argument("--results", type=Path, default=Path("perf/results"))
    args = parser.parse_args()
    if "ray" in args.engines and os.environ.get(INSIDE) != "1":  # re-run where only loopback exists
        done = run_on_loopback([sys.executable, *sys.argv], timeout=6 * 3600,
                               env={**os.environ, INSIDE: "1", **private_token_env()})
        sys.exit(done.returncode)

    cli = [sys.executable, "-m", "cp_dist.cli", "data"]
    sizes = []
    for rows in args.rows:
        raw = args.work / f"{args.format}-{rows}-raw"
        if not (raw / "synth_truth.json").is_file():  # raw files are reused: generating them is not what we measure
            subprocess.run(cli + ["synth", "--format", args.format, "--rows", str(rows), "--out", str(raw), "--overwrite"],
                           check=True, stdout=subprocess.DEVNULL)
        plan = [("local", None)] * ("local" in args.engines) + [("ray", w) for w in args.ray_workers] * ("ray" in args.engines)
        size = {"raw_lines": rows, "runs": []}
        sizes.append(size)
        for engine, workers in plan:
            name = "local" if workers is None else f"ray, {workers} worker{'s' * (workers > 1)}"
            out = args.work / f"{args.format}-{rows}-{engine}{workers or ''}"
            command = cli + ["prepare", "--dataset", args.format, "--raw", str(raw), "--out", str(out), "--overwrite"]
            print(f"{rows:,} lines, {name} ...", flush=True)
            run = measured(command) if workers is None else run_ray(command + ["--engine", "ray"], workers)
            run = {"engine": name, "seconds": round(run["seconds"], 1), "peak_rss_gib": round(run["peak_rss_gib"], 3)} | {
                k: v for k, v in run.items() if k not in ("seconds", "peak_rss_gib")}
            if workers is not None and "local" in args.engines:
                run["same_output_as_local"] = same_output(out, args.work / f"{args.format}-{rows}-local")
            meta = json.loads((out / "meta.json").read_text())
            size |= {"interactions_kept": meta["counts"]["interactions_kept"], "raw_bytes": sum(s["bytes"] for s in meta["sources"])}
            size["runs"].append(run)
            report(args, sizes)  # after every run: a long benchmark cut short keeps what it measured
        for engine, workers in plan[:-1]:  # keep the last output only: the disk holds a few copies at most
            shutil.rmtree(args.work / f"{args.format}-{rows}-{engine}{workers or ''}", ignore_errors=True)


def report(args: argparse.Namespace, sizes: list[dict]) -> None:
    """The table, JSON, markdown and plot of the runs so far."""
    ray_driver = [run["peak_rss_gib"] for size in sizes for run in size["runs"] if run["engine"].startswith("ray")]
    result = {
        "benchmark": "prepare", "format": args.format, "sizes": sizes,
        "ray_driver_peak_spread": round(max(ray_driver) / min(ray_driver) - 1, 3) if ray_driver else None,
        "machine": describe_machine(), "command": " ".join(sys.argv),
    }
    for size in sizes:
        by_name = {run["engine"]: run for run in size["runs"]}
        if "ray, 1 worker" in by_name and "ray, 2 workers" in by_name:
            size["ray_speedup_2_over_1"] = round(by_name["ray, 1 worker"]["seconds"] / by_name["ray, 2 workers"]["seconds"], 2)

    header = ("| raw lines | kept | engine | wall s | lines/s | peak RSS GiB (driver for Ray) "
              "| Ray workers' peaks GiB (largest / sum) | same as local |")
    lines = [header, "|---" * 8 + "|"]
    for size in sizes:
        for run in size["runs"]:
            workers = (f"{run['largest_worker_peak_gib']} / {run['sum_of_worker_peaks_gib']}"
                       if "workers_seen" in run else "")
            lines.append(f"| {size['raw_lines']:,} | {size['interactions_kept']:,} | {run['engine']} | {run['seconds']:.0f} | "
                         f"{size['raw_lines'] / run['seconds']:,.0f} | {run['peak_rss_gib']:.2f} | {workers} | "
                         f"{run.get('same_output_as_local', '')} |")
    summary = "\n".join(lines)
    notes = [f"Ray engine with 2 workers over 1 worker at {s['raw_lines']:,} lines: {s['ray_speedup_2_over_1']}x"
             for s in sizes if "ray_speedup_2_over_1" in s]
    if result["ray_driver_peak_spread"] is not None:
        notes.append(f"Ray driver peak RSS: largest over smallest - 1 = {result['ray_driver_peak_spread']:.1%}")
    machine = f"Machine: {result['machine']['cpu_count']} cores ({result['machine']['cpu']}). Command: `{result['command']}`"
    text = f"{summary}\n\n" + "\n".join(f"- {n}" for n in notes) + f"\n\n{machine}\n"
    print("\n" + text)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"prepare_{args.format}_{'_'.join(str(rows) for rows in args.rows)}"
    write_json(stem.with_suffix(".json"), result)
    write_markdown(stem.with_suffix(".md"), text)
    plot(result, stem.with_suffix(".png"))
    print(f"wrote {stem}.{{json,md,png}}")


if __name__ == "__main__":
    main()
