"""Benchmark: the caption job's shuffles in bytes per row, and its scoring cost per caption, against earlier code.

    .venv/bin/python -m bench.shuffle_bytes [--baseline 847d22f] [--images 300] [--features 1000]
                                            [--sizes 2000,10000]

Bytes: each job (images path, features path; with the field's scores, no METEOR) runs once per code on
Beam's in-process FnApiRunner, with the runner's grouping buffer counting the encoded bytes that reach
every GroupByKey (CoGroupByKey, combines after their partial combine, side inputs): what a
shuffle service carries, divided by the rows captioned.

Scoring cost: the features path pinned to one core (taskset -c 0, Java included), at two sizes, with the
field's scores (with and without METEOR) and without them; the marginal seconds per caption from the small
run to the large one (start-up cancels out), less the run without scores, is what scoring costs a caption.
Sets: bench/scale_sets.py's synthetic scenes with long-tailed captions, 5 references an image.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BASELINE = "847d22f"  # before one scoring path and lean rows
NO_METEOR = ["--set", "caption.meteor=false"]
SCORING = {"no field scores": ["--set", "caption.field_scores=false"], "field scores, no METEOR": NO_METEOR,
           "field scores with METEOR": []}


def _job_args(work: str, job: str, count: int, output: str) -> list:
    from bench import scale_sets
    bundle = os.path.join(HERE, os.pardir, "tests", "fixtures", "legacy_bundle_v1", "export")
    common = ["--config", "local", "--model", os.path.abspath(bundle), "--output", output, "--threads", "1",
              "--beam_size", "1"]
    if job == "features":
        return [*common, "--features", scale_sets.features(work, count), "--split", "test"]
    inputs = scale_sets.images(work, count)
    return [*common, "--images", inputs["images"], "--references", inputs["captions"]]


def _child(args) -> None:
    """Runs one caption job in this process (PYTHONPATH: the code measured), counting what each GroupByKey gets."""
    from apache_beam.runners.portability.fn_api_runner import execution

    tally = collections.defaultdict(int)
    original, original_init = execution.GroupingBuffer.append, execution.GroupingBuffer.__init__

    def counted(buffer, elements_data):
        original(buffer, elements_data)
        tally[buffer.bench_label] += len(elements_data)

    def named(buffer, *init_args, **kwargs):
        original_init(buffer, *init_args, **kwargs)
        frame = sys._getframe(1)
        while frame and "transform_proto" not in frame.f_locals:
            frame = frame.f_back
        buffer.bench_label = frame.f_locals["transform_proto"].unique_name if frame else "?"

    execution.GroupingBuffer.append, execution.GroupingBuffer.__init__ = counted, named
    from pipelines import caption_and_score
    summary = caption_and_score.run([*json.loads(args.job_args), "--runner=FnApiRunner"])
    with open(args.result, "w") as handle:
        json.dump({"rows": summary["counts"]["captioned"], "shuffles": dict(tally)}, handle)


def _shuffles(code: str, job: str, args, work: str) -> dict:
    result = os.path.join(work, "result.json")
    output = os.path.join(work, f"out-{job}")
    subprocess.run(["rm", "-rf", output], check=True)
    command = [sys.executable, os.path.abspath(__file__), "--_child", "--result", result, "--job_args",
               json.dumps(_job_args(work, job, args.images if job == "images" else args.features, output)
                          + NO_METEOR)]
    env = dict(os.environ, PYTHONPATH=code, TF_CPP_MIN_LOG_LEVEL="2")
    with open(os.path.join(work, "child.log"), "w") as log:
        subprocess.run(command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    with open(result) as handle:
        return json.load(handle)


def _short(label: str) -> str:
    for tail in ("/CoGroupByKeyImpl/GroupByKey", "/GroupByKey", "/Group"):
        label = label.replace(tail, "")
    return label


def _bytes_table(results: dict) -> str:
    from bench import harness
    rows = []
    for (code, job), found in results.items():
        shuffles = found["shuffles"]
        per_row = {name: size / max(1, found["rows"]) for name, size in shuffles.items()}
        for name in sorted(per_row, key=per_row.get, reverse=True):
            if per_row[name] >= 1:
                rows.append([job, code, _short(name), f"{per_row[name]:,.0f}"])
        rows.append([job, code, f"**all shuffles** ({found['rows']:,} rows)", f"**{sum(per_row.values()):,.0f}**"])
    return harness.markdown_table(["job", "code", "shuffle (GroupByKey)", "bytes per row"], rows)


def _cost(code: str, args, work: str) -> dict:
    """{scoring: (seconds small, seconds large)} of the features path on one core."""
    from bench import harness
    seconds = {}
    for name, flags in SCORING.items():
        runs = []
        for count in args.sizes:
            output = os.path.join(work, "out-cost")
            subprocess.run(["rm", "-rf", output], check=True)
            command = ["taskset", "-c", "0", sys.executable, "-m", "pipelines.caption_and_score",
                       *_job_args(work, "features", count, output), *flags, "--runner=FnApiRunner"]
            run = harness.run_child(command, os.path.join(work, "cost.log"), cwd=code,
                                    env=dict(os.environ, PYTHONPATH=code, TF_CPP_MIN_LOG_LEVEL="2"))
            if run["rc"]:
                raise SystemExit(f"{code}: {name} at {count} failed:\n" + harness.log_tail(run["log"]))
            runs.append(run["wall_s"])
        seconds[name] = runs
    return seconds


def _cost_table(costs: dict, sizes) -> str:
    from bench import harness
    rows = []
    for code, seconds in costs.items():
        per_caption = {name: (large - small) / (sizes[1] - sizes[0]) for name, (small, large) in seconds.items()}
        base = per_caption["no field scores"]
        for name, (small, large) in seconds.items():
            extra = "-" if name == "no field scores" else f"{1000 * (per_caption[name] - base):.2f}"
            rows.append([code, name, f"{small:.1f} / {large:.1f}", f"{1000 * per_caption[name]:.2f}", extra])
    return harness.markdown_table(["code", "run", f"wall s ({sizes[0]:,} / {sizes[1]:,} captions)",
                                   "ms per caption (marginal)", "scoring ms per caption"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE, help="the earlier code (default: %(default)s)")
    parser.add_argument("--images", type=int, default=300, help="images for the bytes run (default: %(default)s)")
    parser.add_argument("--features", type=int, default=1000, help="records for the bytes run (default: %(default)s)")
    parser.add_argument("--sizes", default="2000,10000", help="features path sizes for the cost (default: %(default)s)")
    parser.add_argument("--work", default=os.path.join(HERE, "out", "shuffle_bytes"))
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--job_args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        return _child(args)
    sys.path.insert(0, os.path.dirname(HERE))
    from bench import harness, scale_sets
    args.sizes = [int(n) for n in args.sizes.split(",")]
    os.makedirs(args.work, exist_ok=True)
    scale_sets.images(args.work, args.images)
    for count in {args.features, *args.sizes}:
        scale_sets.features(args.work, count)
    baseline = tempfile.mkdtemp(prefix="bench-shuffle-baseline-")
    subprocess.run(["git", "worktree", "add", "--detach", baseline, args.baseline], cwd=harness.ROOT, check=True)
    trees = {"today": harness.ROOT, f"baseline {args.baseline}": baseline}
    try:
        shuffles = {(code, job): _shuffles(tree, job, args, args.work) for job in ("images", "features")
                    for code, tree in trees.items()}
        costs = {code: _cost(tree, args, args.work) for code, tree in trees.items()}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", baseline], cwd=harness.ROOT, check=False)
    print(f"- command: `{harness.command_line('shuffle_bytes')}`\n- machine: {harness.machine()}; {harness.today()}\n")
    print(_bytes_table(shuffles) + "\n\n" + _cost_table(costs, args.sizes))


if __name__ == "__main__":
    main()
