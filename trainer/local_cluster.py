"""Run a multi-worker trainer job on this machine: N `trainer.task` processes on free localhost ports.

    python -m trainer.local_cluster --workers 2 --threads 1 -- --features F --job_dir J --config local

Each process gets its own TF_CONFIG (worker i of N, the cluster on 127.0.0.1), as Vertex AI gives each replica
of a multi-replica job; `--set train.strategy=multi_worker` is added. For trying the multi-worker path, the
tests, and bench/multi_worker.py: on one machine it measures overhead, not speed-up. When one worker fails,
the others are stopped (they would wait for it in their next all-reduce) and its exit status is returned.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import List, Optional, Sequence

from captioner import cli, interrupts, storage
from captioner.errors import TrainingFailed, UsageError


def free_ports(count: int) -> List[int]:
    """Ports free at this moment (the OS picks them; held open together so that they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for handle in sockets:
            handle.bind(("127.0.0.1", 0))
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def tf_config(ports: Sequence[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def start(trainer_args: Sequence[str], workers: int, threads: int = 0, log_dir: Optional[str] = None,
          env: Optional[dict] = None, cwd: Optional[str] = None) -> List[subprocess.Popen]:
    """Starts the trainer's worker processes (worker 0 is the chief); output to log_dir/worker-<i>.log."""
    return start_processes(["-m", "trainer.task", *trainer_args, "--set", "train.strategy=multi_worker"],
                           workers, threads, log_dir, env, cwd)


def start_processes(python_args: Sequence[str], workers: int, threads: int = 0, log_dir: Optional[str] = None,
                    env: Optional[dict] = None, cwd: Optional[str] = None) -> List[subprocess.Popen]:
    """`python PYTHON_ARGS` as `workers` processes, each with its TF_CONFIG (and `threads` TensorFlow threads)."""
    ports = free_ports(workers)
    processes = []
    for index in range(workers):
        worker_env = dict(env or os.environ, TF_CONFIG=tf_config(ports, index))
        if threads:
            worker_env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
        output = open(os.path.join(log_dir, f"worker-{index}.log"), "w") if log_dir else None
        processes.append(subprocess.Popen([sys.executable, *python_args], env=worker_env, cwd=cwd, stdout=output,
                                          stderr=subprocess.STDOUT if output else None))
    return processes


def wait(processes: Sequence[subprocess.Popen], poll_seconds: float = 0.5) -> int:
    """Waits for every worker; the first that fails stops the rest. Returns 0 or the first failure's status."""
    while True:
        codes = [process.poll() for process in processes]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.wait()
            return failed[0]
        if all(code == 0 for code in codes):
            return 0
        time.sleep(poll_seconds)


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m trainer.local_cluster", description=__doc__.splitlines()[0],
                                epilog="Everything after -- goes to python -m trainer.task.")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow threads per worker (intra- and inter-op); 0 = TensorFlow's default")
    parser.add_argument("--log_dir", default=None, help="write each worker's output to LOG_DIR/worker-<i>.log "
                                                        "(default: this terminal)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, unknown = parser.parse_known_args(argv[:split])
    if unknown:
        raise UsageError(f"{unknown[0]} is not a flag of trainer.local_cluster: the trainer's flags go after --, "
                         "e.g. python -m trainer.local_cluster --workers 2 -- --features F --job_dir J")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: a cluster needs at least 1 worker")
    if args.log_dir:
        storage.check_folder(args.log_dir, "--log_dir")
        os.makedirs(args.log_dir, exist_ok=True)
    processes = start(argv[split + 1:], args.workers, args.threads, args.log_dir)
    try:
        code = wait(processes)
    except KeyboardInterrupt as interrupt:
        interrupts.pass_on(interrupt, processes)
        raise
    if code and args.log_dir:  # the cause is in the failed worker's log: say it here, where the user looks
        failed = next(index for index, process in enumerate(processes) if process.returncode not in (0, None))
        path = os.path.join(args.log_dir, f"worker-{failed}.log")
        with open(path, errors="replace") as handle:
            said = [line.strip()[len("error: "):] for line in handle if line.startswith("error: ")]
        raise TrainingFailed(f"worker {failed} of {args.workers} failed (exit {code}): "
                             f"{said[-1] if said else 'see its log'}; its output is in {path}")
    return code


if __name__ == "__main__":
    sys.exit(cli.run(main))
