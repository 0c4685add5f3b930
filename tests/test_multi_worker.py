"""train.strategy=multi_worker: worker processes on localhost ports, each with its TF_CONFIG, as on Vertex AI.

Two workers with half the per-replica batch train on the same global batches as one worker (input sharded by
data), so their losses match one worker's; only the chief writes the job dir; killing a worker mid-epoch and
restarting both resumes from the chief's last backup, with the input sharded by file this time.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from captioner.layout import EVAL_FILE, MODEL_FILE
from tests.synthetic_features import overrides, tiny_config
from trainer import job, local_cluster
from trainer.job_folder import BACKUP_METADATA, HISTORY, SELF_CRITICAL_HISTORY

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _workers(config, features, job_dir, log_dir, *extra):
    os.makedirs(log_dir, exist_ok=True)
    args = ["--features", features, "--job_dir", job_dir, *extra, *overrides(config)]
    return local_cluster.start(args, workers=2, threads=1, log_dir=str(log_dir), env=ENV, cwd=PROJECT_ROOT)


def _logs(log_dir) -> list:
    return [open(os.path.join(log_dir, f"worker-{i}.log")).read() for i in range(2)]


def _read(path):
    with open(path) as handle:
        return json.load(handle)


@pytest.mark.slow
def test_two_workers_train_as_one_worker_with_the_same_global_batch(synthetic, tmp_path):
    # batches of 12 captions: 4 images of 3 captions on one replica, 2 on each of two
    one = job.run(tiny_config(epochs=4, batch_size=12, strategy="default"), synthetic, str(tmp_path / "one"),
                  eval_split="test", verbose=0)
    job_dir, log_dir = str(tmp_path / "two"), tmp_path / "logs"
    processes = _workers(tiny_config(epochs=4, batch_size=6), synthetic, job_dir, log_dir, "--eval_split", "test")
    assert local_cluster.wait(processes) == 0, _logs(log_dir)[0][-3000:]
    chief, worker = _logs(log_dir)
    assert "global batch 4 = 2 per replica x 2" in chief and "input sharding by data" in chief
    assert "worker 1 of 2: done; the chief exports" in worker and "summary:" not in worker
    assert "- loss:" in chief and "- loss:" not in worker  # the progress bar, on the chief only
    assert os.path.exists(os.path.join(job_dir, "checkpoints", "best.weights.h5"))
    assert any(name.startswith("events.") for _, _, names in os.walk(os.path.join(job_dir, "logs")) for name in names)

    two = _read(os.path.join(job_dir, HISTORY))
    assert two["runs"][0]["replicas"] == 2 and len(two["epochs"]) == 4
    one_losses = [e["loss"] for e in one.history["epochs"]]
    two_losses = [e["loss"] for e in two["epochs"]]
    assert two_losses[0] == pytest.approx(one_losses[0], rel=1e-4)  # the same first epoch, step for step
    # from epoch 2 the two reshuffle differently (a fresh iterator per epoch in fit, a repeated one here), so
    # later losses agree as two training runs do, not exactly; both must learn alike
    assert two_losses[-1] < two_losses[0] / 2 and one_losses[-1] < one_losses[0] / 2
    assert two_losses[-1] == pytest.approx(one_losses[-1], rel=0.25)
    # the bundle the chief exported captions the held-out images as one worker's does
    bleu_one, bleu_two = one.evaluation["bleu"]["bleu4"], _read(os.path.join(job_dir, EVAL_FILE))["bleu"]["bleu4"]
    assert bleu_two > 0.7 and abs(bleu_two - bleu_one) < 0.1
    assert os.path.exists(os.path.join(job_dir, "export", MODEL_FILE))


@pytest.mark.slow
def test_sigkill_of_a_worker_then_restarting_both_resumes_from_the_chiefs_backup(synthetic, tmp_path):
    job_dir = str(tmp_path / "job")
    config = tiny_config(epochs=5, batch_size=8, early_stopping_patience=0, input_sharding="file",
                         self_critical_epochs=1, self_critical_samples=2)
    metadata = os.path.join(job_dir, BACKUP_METADATA)

    def backed_up_epoch() -> int:
        try:
            return _read(metadata)["epoch"]
        except (OSError, ValueError, KeyError):
            return 0

    first = _workers(config, synthetic, job_dir, tmp_path / "first", "--eval_split", "none")
    try:
        deadline = time.time() + 150
        while backed_up_epoch() < 1 and time.time() < deadline and all(p.poll() is None for p in first):
            time.sleep(0.05)
        assert backed_up_epoch() >= 1, _logs(tmp_path / "first")[0][-3000:]
        os.kill(first[1].pid, signal.SIGKILL)
        assert first[1].wait() == -signal.SIGKILL
    finally:
        for process in first:  # the chief waits for the dead worker in its next all-reduce
            process.kill()
            process.wait()
    killed_at = backed_up_epoch()
    assert 1 <= killed_at < 5 and not os.path.exists(os.path.join(job_dir, "export"))

    second = _workers(config, synthetic, job_dir, tmp_path / "second", "--eval_split", "none")
    assert local_cluster.wait(second) == 0, _logs(tmp_path / "second")[0][-3000:]
    for log in _logs(tmp_path / "second"):
        assert f"resuming from the backup of epoch {killed_at} of 5" in log and "input sharding by file" in log
    history = _read(os.path.join(job_dir, HISTORY))
    assert [r["initial_epoch"] for r in history["runs"]] == [0, killed_at]
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, 6))
    assert [e["epoch"] for e in _read(os.path.join(job_dir, SELF_CRITICAL_HISTORY))["epochs"]] == [0, 1]
    assert os.path.exists(os.path.join(job_dir, "export", MODEL_FILE))


@pytest.mark.slow
def test_multi_worker_without_tf_config_says_what_it_needs(synthetic, tmp_path):
    env = {k: v for k, v in ENV.items() if k != "TF_CONFIG"}
    run = subprocess.run([sys.executable, "-m", "trainer.task", "--features", synthetic, "--job_dir", str(tmp_path / "j"),
                          "--set", "train.strategy=multi_worker"], cwd=PROJECT_ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert run.returncode == 2 and "train.strategy=multi_worker needs TF_CONFIG" in run.stdout, run.stdout[-2000:]
