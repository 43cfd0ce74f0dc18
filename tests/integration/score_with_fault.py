"""`python -m jobs score` with a fault or a meeting point at its commit.

Usage: python score_with_fault.py MODE <the score job's options>. MODE:

* ``kill-before-commit``: the Python workers have written every scores file into the table's
  folder; the process kills itself with SIGKILL just before the Delta commit.
* ``kill-while-writing``: Spark writes the scores; the Python worker scoring the rows kills
  the job's whole process group with SIGKILL once Spark has begun writing a file (rows of
  earlier batches are in it), so the JVM dies mid-write.
* ``commit-at:EPOCH``: wait until the wall clock reaches EPOCH (seconds), then write or commit
  (Python writers: the commit; Spark: the write, which ends in its commit), so two processes
  started together reach their commits together.

The tests run it in a subprocess started in a new session (process group).
"""
import os
import signal
import sys
import time

import runtime.storage
import scoring.nightly
import scoring.spark
from jobs import score


def kill_before_commit():
    def commit(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    runtime.storage.commit_partitions = commit


def kill_while_writing(after_rows: int = 100):
    from pyspark.sql import functions as F

    import scoring.files

    seen = [0]  # rows this task's Python worker has seen

    @F.udf("double")
    def die_after(risk):
        seen[0] += 1
        if seen[0] > after_rows:  # earlier batches of rows are on their way into Spark's file writer
            time.sleep(2)
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return risk

    def killing(real):
        def scorer(*args, **kwargs):
            return real(*args, **kwargs).withColumn("risk", die_after("risk"))
        return scorer
    # whichever reader the job uses
    scoring.spark.score_events = killing(scoring.spark.score_events)
    scoring.files.score_parquet_files = killing(scoring.files.score_parquet_files)


def meet_at(epoch: float):
    def waiting(real):
        def call(*args, **kwargs):
            time.sleep(max(0.0, epoch - time.time()))
            return real(*args, **kwargs)
        return call
    runtime.storage.commit_partitions = waiting(runtime.storage.commit_partitions)
    scoring.nightly.write_scores = waiting(scoring.nightly.write_scores)


if __name__ == "__main__":
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == "kill-before-commit":
        kill_before_commit()
    elif mode == "kill-while-writing":
        kill_while_writing()
    elif mode.startswith("commit-at:"):
        meet_at(float(mode.split(":", 1)[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    sys.exit(score.main(argv))
