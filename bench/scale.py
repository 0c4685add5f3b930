"""Benchmark: both pipelines at two sizes 10x apart, flat memory and linear time, against the earlier code.

    .venv/bin/python -m bench.scale [--baseline REV] [--workers 2] [--scale 1.0]

On synthetic sets (bench/scale_sets.py: demo scenes replicated under new ids), each run its own child
process tree on DirectRunner with `--workers` worker processes (one thread each):
  caption, features path   10,000 and 100,000 records (the bundle in tests/fixtures/legacy_bundle_v1)
  caption, images path      2,000 and 20,000 JPEG files, scored against a caption file
  extract                   2,000 and 20,000 JPEG files (thumbnail encoder) with a caption file and splits
plus a run at a twentieth of the smaller size, whose wall time estimates the fixed start-up. For each it
reports wall time and peak RSS, sampled: of the largest worker process (an SDK worker: what a Dataflow
worker's Python process would hold), of DirectRunner's own process (the runner, which holds every shuffle in
memory: the part Dataflow's shuffle service holds there), of the largest Java process (METEOR's, heap capped
at 2 GB), of the largest process (os.wait4's ru_maxrss) and of the whole tree; and two ratios: worker RSS large / small (target <= 1.15, flat in N) and
time beyond linear, the
seconds per image from the small to the large run over those from the start-up run to the small one
(start-up cancels out of both; target <= 1.2). The same runs on the code at --baseline (checked out in a
temporary worktree) are the baseline, in the same run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from bench import harness, scale_sets

JOBS = {"caption, features path": (10_000, 100_000), "caption, images path": (2_000, 20_000),
        "extract": (2_000, 20_000)}
SHORT_NAMES = {"features": "caption, features path", "images": "caption, images path", "extract": "extract"}
BASELINE = "09f017e"  # the last commit before the scale issue: whole-set side inputs, one-worker outputs
TARGETS = {"rss_ratio": 1.15, "time_ratio": 1.2}
LEGACY_BUNDLE = os.path.join(harness.ROOT, "tests", "fixtures", "legacy_bundle_v1", "export")


def _prepare(sizes: dict, work: str) -> None:
    """Writes every set the runs need, in a child process (see bench/scale_sets.py)."""
    images = sorted({n for job, pair in sizes.items() if job != "caption, features path" for n in _counts(pair)})
    features = sorted(_counts(sizes["caption, features path"])) if "caption, features path" in sizes else []
    command = [sys.executable, "-m", "bench.scale_sets", "--work", work, "--images", ",".join(map(str, images)),
               "--features", ",".join(map(str, features))]
    print(f"[bench] writing the synthetic sets into {work} ...", flush=True)
    harness.run_checked(command, os.path.join(work, "prepare.log"), work, "writing the sets")


def _counts(pair) -> tuple:
    """The sizes a job runs at: small, large, and the start-up run's."""
    return (*pair, max(20, pair[0] // 20))


def _command(job: str, count: int, work: str, output: str, workers: int) -> list:
    beam = ["--runner=DirectRunner", f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    if job == "extract":
        inputs = scale_sets.images(work, count)
        # extract.num_shards=0 (the default; the local config writes 2 shards for the demo): a fixed shard count
        # is a shuffle of every record's features, which DirectRunner holds in its own process
        return ["pipelines.extract_features", "--config", "local", "--set", "extract.num_shards=0", "--images",
                inputs["images"], "--captions", inputs["captions"], "--splits", inputs["splits"], "--output", output,
                "--encoder_threads", "1", *beam]
    common = ["pipelines.caption_and_score", "--config", "local", "--model", LEGACY_BUNDLE, "--output", output,
              "--threads", "1", "--beam_size", "1", *beam]
    if job == "caption, features path":
        return [*common, "--features", scale_sets.features(work, count), "--split", "test"]
    inputs = scale_sets.images(work, count)
    return [*common, "--images", inputs["images"], "--references", inputs["captions"]]


def _measure(code: str, job: str, count: int, work: str, workers: int) -> dict:
    output = os.path.join(work, "out")
    shutil.rmtree(output, ignore_errors=True)
    command = _command(job, count, work, output, workers)
    env = dict(os.environ, PYTHONPATH=code, TF_CPP_MIN_LOG_LEVEL="2")
    print(f"[bench] {os.path.basename(code) or code}: {job}, {count} images", flush=True)
    run = harness.run_child([sys.executable, "-m", *command], os.path.join(work, "run.log"), cwd=code,
                            sample_tree=True, env=env)
    if run["rc"] != 0:
        raise SystemExit(f"error: {job} at {count} failed in {code} (exit {run['rc']}):\n"
                         + harness.log_tail(run["log"]))
    return run


def _ratios(runs: dict, small: int, large: int, start: int) -> dict:
    """RSS large / small, and the seconds per image from small to large over those from start-up to small."""
    def per_image(a: int, b: int) -> float:
        return (runs[b]["wall_s"] - runs[a]["wall_s"]) / (b - a)

    def grown(key: str) -> float:
        return runs[large][key] / runs[small][key]

    return {"rss": grown("peak_rss_mb"), "runner": grown("peak_root_rss_mb"), "worker": grown("peak_descendant_rss_mb"),
            "time": per_image(small, large) / max(1e-9, per_image(start, small))}


def report(results: dict, sizes: dict, baseline: str = BASELINE) -> str:
    rows = []
    for job, (small, large) in sizes.items():
        for code, label in (("today", "today"), ("baseline", f"baseline {baseline}")):
            runs = results[code][job]
            start = _counts((small, large))[2]
            ratio = _ratios({**runs, start: runs["start"]}, small, large, start)
            def megabytes(key: str) -> str:
                return f"{runs[small][key]:.0f} / {runs[large][key]:.0f}"

            rows.append([job, label, f"{small:,} / {large:,}",
                         f"{runs[small]['wall_s']:.0f} / {runs[large]['wall_s']:.0f}", f"{runs['start']['wall_s']:.0f}",
                         megabytes("peak_descendant_rss_mb"), f"{ratio['worker']:.2f}x",
                         harness.met(ratio["worker"] <= TARGETS["rss_ratio"]),
                         megabytes("peak_root_rss_mb"), f"{ratio['runner']:.2f}x", megabytes("peak_java_rss_mb"),
                         megabytes("peak_rss_mb"),
                         f"{ratio['rss']:.2f}x", megabytes("peak_tree_rss_mb"),
                         f"{ratio['time']:.2f}x", harness.met(ratio["time"] <= TARGETS["time_ratio"])])
    table = harness.markdown_table(
        ["job", "code", "images", "wall s", "start-up s", "largest worker MB", "worker large/small",
         "worker flat (<= 1.15)", "runner MB", "runner large/small", "Java MB", "largest process MB",
         "largest large/small",
         "process tree MB", "time vs linear", "linear (<= 1.2)"], rows)
    return (f"- command: `{harness.command_line('scale')}`\n- machine: {harness.machine()}; {harness.today()}\n\n"
            + table + "\n")


def main() -> None:
    parser = harness.argument_parser("scale", __doc__)
    parser.add_argument("--baseline", default=BASELINE, help="the earlier code to compare with (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes (default: %(default)s)")
    parser.add_argument("--jobs", default=",".join(SHORT_NAMES),
                        help="comma list of the jobs to run, of: %(default)s (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size, e.g. 0.1 for a quick look")
    parser.add_argument("--work", default=os.path.join(harness.ROOT, "bench", "out", "scale"),
                        help="where the synthetic sets are written and kept (default: %(default)s)")
    args = parser.parse_args()
    unknown = set(args.jobs.split(",")) - set(SHORT_NAMES)
    if unknown:
        parser.error(f"unknown job {sorted(unknown)[0]!r}; the jobs are: {', '.join(SHORT_NAMES)}")
    chosen = {SHORT_NAMES[name] for name in args.jobs.split(",")}
    sizes = {job: tuple(max(20, int(n * args.scale)) for n in pair) for job, pair in JOBS.items() if job in chosen}
    os.makedirs(args.work, exist_ok=True)
    _prepare(sizes, args.work)
    baseline = tempfile.mkdtemp(prefix="bench-scale-baseline-")
    subprocess.run(["git", "worktree", "add", "--detach", baseline, args.baseline], cwd=harness.ROOT, check=True)
    results = {"today": {}, "baseline": {}}
    try:
        for job, (small, large) in sizes.items():
            for code, tree in (("today", harness.ROOT), ("baseline", baseline)):
                small, large, start = _counts((small, large))
                results[code][job] = {count: _measure(tree, job, count, args.work, args.workers)
                                      for count in (small, large)}
                results[code][job]["start"] = _measure(tree, job, start, args.work, args.workers)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", baseline], cwd=harness.ROOT, check=False)
    print(report(results, sizes, args.baseline))
    harness.write_json(os.path.join(args.work, "results.json"), results, indent=1)


if __name__ == "__main__":
    main()
