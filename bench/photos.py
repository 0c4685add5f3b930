"""Benchmark: captioning a few photos with `python -m captioner.caption` beside the caption job, same images.

    .venv/bin/python -m bench.photos --model JOB/export --data ../shared/data/flickr8k [--images 100]

Every run is its own process, timed from its start to its exit (a cold start: Python, TensorFlow and the
bundle load included):
  command, 1 image    - the target: under 3 s on 2 cores
  command, N images   - and its rate start-up excluded: (N - 1) / (t_N - t_1)
  caption job, N      - python -m pipelines.caption_and_score --image_list (the same N files), DirectRunner with
                        2 worker processes, no scoring; its rate start-up excluded: (N - N/4) / (t_N - t_N/4)
The target for N images: the command's rate at least the caption job's, start-up excluded.
"""
from __future__ import annotations

import os
import sys
import tempfile

from bench import harness

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TARGET_COLD_S = 3.0


def command(model: str, paths: list) -> list:
    return [sys.executable, "-m", "captioner.caption", "--model", model, *paths]


def job(model: str, listing: str, output: str) -> list:
    return [sys.executable, "-m", "pipelines.caption_and_score", "--config", "local", "--model", model,
            "--image_list", listing, "--output", output, "--set", "caption.field_scores=false",
            "--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing",
            "--threads", "1"]


def timed_run(argv: list, work: str, name: str) -> float:
    run = harness.run_child(argv, os.path.join(work, f"{name}.log"))
    if run["rc"] != 0:
        raise SystemExit(f"error: {name} failed (exit {run['rc']}):\n{harness.log_tail(run['log'])}")
    return run["wall_s"]


def main() -> None:
    parser = harness.argument_parser("photos", __doc__)
    parser.add_argument("--model", required=True, help="a bundle (JOB_DIR/export)")
    parser.add_argument("--data", required=True, help="a Flickr8k folder: its images/ are captioned")
    parser.add_argument("--images", type=int, default=100, help="N, the larger run (default: %(default)s)")
    args = parser.parse_args()
    paths = sorted(os.path.join(args.data, "images", name) for name in os.listdir(os.path.join(args.data, "images"))
                   if name.endswith(".jpg"))[:args.images]
    work = tempfile.mkdtemp(prefix="bench-photos-")
    quarter = paths[:max(1, len(paths) // 4)]
    seconds = {"one": timed_run(command(args.model, paths[:1]), work, "command-1"),
               "all": timed_run(command(args.model, paths), work, "command-n")}
    for name, chosen in (("job_quarter", quarter), ("job_all", paths)):
        listing = os.path.join(work, f"{name}.txt")
        with open(listing, "w") as handle:
            handle.write("\n".join(chosen) + "\n")
        seconds[name] = timed_run(job(args.model, listing, os.path.join(work, name)), work, name)
    command_rate = harness.marginal_rate(len(paths), seconds["all"], 1, seconds["one"])
    job_rate = harness.marginal_rate(len(paths), seconds["job_all"], len(quarter), seconds["job_quarter"])
    if seconds["job_all"] - seconds["job_quarter"] < 1.0:
        raise SystemExit(f"error: the caption job took as long for {len(paths)} images as for {len(quarter)}: too "
                         "few images to see its rate; use more --images (the default is 100)")
    print(f"\ncommand: {harness.command_line('photos')}\nmachine: {harness.machine()}; {harness.today()}\n")
    print(harness.markdown_table(["run", "images", "wall s (cold start)", "images/s, start-up excluded", "target",
                                  "met"], [
        ["command", 1, f"{seconds['one']:.1f}", "", f"< {TARGET_COLD_S:.0f} s", harness.met(
            seconds["one"] < TARGET_COLD_S)],
        ["command", len(paths), f"{seconds['all']:.1f}", f"{command_rate:.1f}", ">= the job's", harness.met(
            command_rate >= job_rate)],
        ["caption job", len(quarter), f"{seconds['job_quarter']:.1f}", "", "", ""],
        ["caption job", len(paths), f"{seconds['job_all']:.1f}", f"{job_rate:.1f}", "", ""],
    ]))
    print(f"\ncommand / caption job, {len(paths)} images: {seconds['job_all'] / seconds['all']:.1f}x faster "
          f"(wall); {command_rate / job_rate:.2f}x the rate, start-up excluded")


if __name__ == "__main__":
    main()
