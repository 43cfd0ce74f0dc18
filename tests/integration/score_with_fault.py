"""`python -m jobs score` with a fault or a meeting point at its commit.

Usage: python score_with_fault.py MODE <the score job's options>. MODE:

* ``kill-before-commit``: the Python workers have written every scores file into the table's
  folder; the process kills itself with SIGKILL just before the Delta commit.
* ``stall-while-writing``: Spark writes the scores; the rows of its second task are held up
  (150 s), so the first task's files are written while the commit waits for the second: the
  test kills the job then (SIGKILL to its process group: the driver and its JVM).
* ``commit-barrier:DIR:N``: at the commit (Python writers: the commit; Spark: the write, which
  ends in its commit) leave a file in DIR, wait until N processes have, then go on: N processes
  started together reach their commits together, as soon as the slowest is ready (no fixed
  wait). Gives up after 600 s, failing the job.

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


def stall_while_writing(seconds: float = 150):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    import scoring.files

    @F.udf(T.DoubleType())  # a type, not "double": no Spark session to parse it with yet
    def stall_second_task(risk):
        from pyspark import TaskContext

        if TaskContext.get().partitionId() == 1:
            time.sleep(seconds)
        return risk

    def stalling(real):
        def scorer(*args, **kwargs):
            return real(*args, **kwargs).withColumn("risk", stall_second_task("risk"))
        return scorer
    # whichever reader the job uses
    scoring.spark.score_events = stalling(scoring.spark.score_events)
    scoring.files.score_parquet_files = stalling(scoring.files.score_parquet_files)


def meet_at_barrier(folder: str, parties: int):
    def waiting(real):
        def call(*args, **kwargs):
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, str(os.getpid())), "w").close()
            deadline = time.time() + 600
            while len(os.listdir(folder)) < parties:
                if time.time() > deadline:
                    raise SystemExit(f"commit-barrier: {len(os.listdir(folder))} of {parties} processes came")
                time.sleep(0.1)
            return real(*args, **kwargs)
        return call
    runtime.storage.commit_partitions = waiting(runtime.storage.commit_partitions)
    scoring.nightly.write_scores = waiting(scoring.nightly.write_scores)


if __name__ == "__main__":
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == "kill-before-commit":
        kill_before_commit()
    elif mode == "stall-while-writing":
        stall_while_writing()
    elif mode.startswith("commit-barrier:"):
        folder, parties = mode.split(":", 1)[1].rsplit(":", 1)
        meet_at_barrier(folder, int(parties))
    else:
        raise SystemExit(f"unknown mode {mode}")
    sys.exit(score.main(argv))
