"""Benchmark: the multi-worker trainer, 1 vs 2 worker processes on this machine (one TensorFlow thread each).

    .venv/bin/python -m bench.multi_worker [--images 1500] [--units 256] [--epochs 2]

Each run is `python -m trainer.local_cluster` on a synthetic features folder, with the Flickr8k decoder's
widths (attention LSTM, 256 units). Step time is the trainer's own figure: the mean seconds per train step
after the first (which traces the step). With the per-replica batch fixed, a worker computes the same in
both runs, so what the second worker adds to the step is the cost of the all-reduce (gradients summed
across processes over gRPC on localhost, and waiting for the slower worker): its share of the step is
(step 2 workers - step 1 worker) / step 2 workers. On one 2-core machine this measures overhead, not
speed-up: both workers share the machine's memory bandwidth, and there is no network between them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time

from bench import harness

RUNS = (("1 worker", 1, 1), ("2 workers, same per-replica batch", 2, 1), ("2 workers, same global batch", 2, 2))


def _features(work: str, images: int) -> str:
    folder = os.path.join(work, f"features-{images}")
    if not os.path.exists(os.path.join(folder, "manifest.json")):
        from tests.synthetic_features import write_synthetic_features
        write_synthetic_features(folder, num_train=images, num_dev=max(24, images // 10), num_test=24,
                                 num_shards=8)
    return folder


def _trainer_args(features: str, job_dir: str, args, batch: int) -> list:
    from tests.synthetic_features import overrides, tiny_config
    config = tiny_config(embedding_dim=args.units, units=args.units, epochs=args.epochs, batch_size=batch,
                         early_stopping_patience=0, learning_rate=0.001)
    return ["--features", features, "--job_dir", job_dir, "--eval_split", "none", "--overwrite", *overrides(config)]


def _measure(name: str, workers: int, divide: int, features: str, work: str, args) -> dict:
    job_dir, log_dir = os.path.join(work, "job"), os.path.join(work, "logs")
    shutil.rmtree(log_dir, ignore_errors=True)
    batch = args.batch // divide
    command = [sys.executable, "-m", "trainer.local_cluster", "--workers", str(workers), "--threads", "1",
               "--log_dir", log_dir, "--", *_trainer_args(features, job_dir, args, batch)]
    print(f"[bench] {name}: {workers} worker(s), {batch} captions per replica ...", flush=True)
    run = harness.run_checked(command, os.path.join(work, "cluster.log"), job_dir, name)
    log = open(os.path.join(log_dir, "worker-0.log")).read()
    step = float(re.search(r"([0-9.]+) s per train step after the first", log).group(1))
    parameters = int(re.search(r"(\d+) trainable parameters", log).group(1))
    return {"name": name, "workers": workers, "replica_batch": batch, "global_batch": batch * workers,
            "step_s": step, "parameters": parameters, "wall_s": run["wall_s"]}


def _all_reduce_worker(megabytes: float, result: str) -> None:
    """In a worker process (TF_CONFIG set): the mean time of an all-reduce of `megabytes` of float32."""
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        values = tf.Variable(tf.ones([int(megabytes * 1e6 / 4)]))

    @tf.function
    def step():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.identity(values)))

    def timed(repeats: int) -> float:
        started = time.perf_counter()
        for _ in range(repeats):
            strategy.experimental_local_results(step())[0].numpy()
        return (time.perf_counter() - started) / repeats

    timed(3)  # traces, connects
    seconds = timed(30)
    if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0:
        harness.write_json(result, {"all_reduce_s": seconds})


def _measure_all_reduce(megabytes: float, work: str) -> float:
    """Two worker processes all-reducing `megabytes`: seconds per all-reduce (worker 0's mean)."""
    from trainer import local_cluster
    result = os.path.join(work, "all_reduce.json")
    processes = local_cluster.start_processes(
        ["-m", "bench.multi_worker", "--_all_reduce_mb", str(megabytes), "--_result", result], 2, threads=1,
        log_dir=work, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    print(f"[bench] all-reduce of {megabytes:.1f} MB between 2 processes ...", flush=True)
    if local_cluster.wait(processes) != 0:
        raise SystemExit("error: the all-reduce measurement failed")
    return harness.read_json(result)["all_reduce_s"]


def report(runs: list, args, all_reduce_s: float) -> str:
    single = runs[0]
    rows = []
    for run in runs:
        share = "-"
        if run["workers"] > 1 and run["replica_batch"] == single["replica_batch"]:
            share = f"{100 * max(0.0, run['step_s'] - single['step_s']) / run['step_s']:.0f}%"
        rows.append([run["name"], run["global_batch"], f"{1000 * run['step_s']:.1f}",
                     f"{run['global_batch'] / run['step_s']:.0f}",
                     f"{(run['global_batch'] / run['step_s']) / (single['global_batch'] / single['step_s']):.2f}x",
                     share, f"{run['wall_s']:.0f}"])
    table = harness.markdown_table(["run", "global batch", "step ms", "examples/s", "examples/s vs 1 worker",
                                    "added by the 2nd worker, share of the step", "wall s"], rows)
    return (f"- command: `{harness.command_line('multi_worker')}`\n- machine: {harness.machine()}; {harness.today()}"
            f"\n- decoder: attention LSTM, {args.units} units, {single['parameters']:,} trainable parameters "
            f"(gradients all-reduced each step: {4 * single['parameters'] / 1e6:.1f} MB float32); "
            f"{args.images} train images x 3 captions, {args.epochs} epochs\n- an all-reduce of those "
            f"{4 * single['parameters'] / 1e6:.1f} MB between the two processes alone: {1000 * all_reduce_s:.1f} ms"
            f"\n\n{table}\n")


def main() -> None:
    parser = harness.argument_parser("multi_worker", __doc__)
    parser.add_argument("--images", type=int, default=1500, help="synthetic train images (default: %(default)s)")
    parser.add_argument("--units", type=int, default=256, help="decoder width (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="captions per replica (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default: %(default)s)")
    parser.add_argument("--work", default=os.path.join(harness.ROOT, "bench", "out", "multi_worker"),
                        help="where the features and runs go (default: %(default)s)")
    parser.add_argument("--_all_reduce_mb", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--_result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._all_reduce_mb:
        _all_reduce_worker(args._all_reduce_mb, args._result)
        return
    os.makedirs(args.work, exist_ok=True)
    features = _features(args.work, args.images)
    runs = [_measure(name, workers, divide, features, args.work, args) for name, workers, divide in RUNS]
    all_reduce_s = _measure_all_reduce(4 * runs[0]["parameters"] / 1e6, args.work)
    print(report(runs, args, all_reduce_s))


if __name__ == "__main__":
    main()
