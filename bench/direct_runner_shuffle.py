"""Benchmark: what one GroupByKey costs a DirectRunner SDK worker, as the number of keys grows.

    .venv/bin/python -m bench.direct_runner_shuffle [--keys 200000,600000] [--workers 2]

A pipeline of nothing but `Create -> (key, small value) -> GroupByKey -> count`, on DirectRunner with
`--workers` worker processes, at each key count; the peak RSS of the largest SDK worker and of the runner
(sampled, bench/harness.py). DirectRunner (Beam's FnApiRunner) keeps a shuffle's groups in the runner and
hands each worker its share of a GroupByKey's output as one encoded block, so a worker's memory grows with
the shuffle's size, whatever the pipeline does with the groups. Dataflow streams groups from its shuffle
service instead. This is why the caption job's n-gram joins (one element per rare n-gram of every image)
cannot be flat per worker on DirectRunner.
"""
from __future__ import annotations

import argparse
import os
import sys

from bench import harness


def _pipeline(keys: int, workers: int) -> None:
    """The measured child: `keys` keys of 3 small values each through one GroupByKey."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    options = PipelineOptions(["--runner=DirectRunner", f"--direct_num_workers={workers}",
                               "--direct_running_mode=multi_processing"])
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | beam.Create(list(range(keys)))
             | beam.FlatMap(lambda i: [((f"word{i}", "beside", f"zq{i}"), (i, n)) for n in range(3)])
             | beam.GroupByKey()
             | beam.MapTuple(lambda key, values: len(list(values)))
             | beam.combiners.Count.Globally())


def main() -> None:
    parser = harness.argument_parser("direct_runner_shuffle", __doc__)
    parser.add_argument("--keys", default="200000,600000", help="comma list of key counts (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner workers (default: %(default)s)")
    parser.add_argument("--_child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        _pipeline(args._child, args.workers)
        return
    rows, work = [], os.path.join(harness.ROOT, "bench", "out")
    os.makedirs(work, exist_ok=True)
    for keys in (int(k) for k in args.keys.split(",")):
        print(f"[bench] GroupByKey of {keys:,} keys ...", flush=True)
        run = harness.run_child([sys.executable, "-m", "bench.direct_runner_shuffle", "--_child", str(keys),
                                 "--workers", str(args.workers)], os.path.join(work, "direct_runner_shuffle.log"),
                                sample_tree=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if run["rc"] != 0:
            raise SystemExit("error: the pipeline failed:\n" + harness.log_tail(run["log"]))
        rows.append([f"{keys:,}", f"{run['wall_s']:.0f}", f"{run['peak_descendant_rss_mb']:.0f}",
                     f"{run['peak_root_rss_mb']:.0f}"])
    print(f"- command: `{harness.command_line('direct_runner_shuffle')}`\n- machine: {harness.machine()}; "
          f"{harness.today()}\n\n" + harness.markdown_table(["keys (x 3 values)", "wall s", "largest SDK worker MB",
                                                             "runner MB"], rows))


if __name__ == "__main__":
    main()
