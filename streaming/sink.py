"""The stream's exactly-once Parquet sink: each micro-batch committed once, whatever crashes.

A batch ``N`` is written to ``<output>/_staging/batch_id=N``, its files are renamed into
``<output>/date=../hour=../part-N-*.parquet`` (names fixed by the batch id; a manifest lists them
first, so a retried batch removes a half-moved attempt) and a marker ``<commits>/N`` is written
last; a batch with a marker is never written again. Files go through :mod:`runtime.fs`, so the
output may be a local folder or ``s3a://``.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import Any, Mapping, Sequence

from pyspark.sql import DataFrame

from runtime import fs


def name_of(path: str) -> str:
    """The last part of a path or URI."""
    return path.rstrip("/").rsplit("/", 1)[-1]


class ExactlyOnceSink:
    """Parquet partitioned by ``date``/``hour``; each micro-batch committed once (see module doc)."""

    def __init__(self, output: str, commits: str, partition_by: Sequence[str] = ("date", "hour")):
        self.output = output.rstrip("/")
        self.commits = commits.rstrip("/")
        self.partition_by = tuple(partition_by)

    def marker(self, batch_id: int) -> str:
        return f"{self.commits}/{batch_id}"

    def committed(self, batch_id: int) -> bool:
        return fs.exists(self.marker(batch_id))

    def committed_ids(self) -> list[int]:
        return sorted(int(name_of(p)) for p in fs.list_files(self.commits) if name_of(p).isdigit())

    def commit_info(self, batch_id: int) -> dict:
        return json.loads(fs.read_text(self.marker(batch_id)))

    def write(self, df: DataFrame, batch_id: int, extra: Mapping[str, Any] | None = None) -> dict:
        """Write ``df`` as batch ``batch_id`` unless already committed; returns the commit record.

        ``extra`` is stored in the commit record (the incremental engine keeps its watermark there).
        """
        if self.committed(batch_id):
            return self._skipped(batch_id)
        staging = self._fresh_staging(batch_id)
        df.write.mode("overwrite").partitionBy(*self.partition_by).parquet(staging)
        return self._commit(batch_id, staging, extra)

    def write_arrow(self, table, batch_id: int, extra: Mapping[str, Any] | None = None) -> dict:
        """:meth:`write` for a ``pyarrow.Table`` made on the driver (no Spark job).

        One Parquet file per (date, hour) of the batch, written locally with pyarrow, copied into
        the staging folder (so s3a:// works too), then committed exactly as :meth:`write` commits.
        The table holds the partition columns; the files do not (they are in the folder names, as
        Spark writes them).
        """
        import tempfile

        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if self.committed(batch_id):
            return self._skipped(batch_id)
        staging = self._fresh_staging(batch_id)
        keys = list(self.partition_by)
        data = table.drop_columns(keys)
        groups = table.select(keys).group_by(keys).aggregate([]) if table.num_rows else None
        with tempfile.TemporaryDirectory(prefix="sink_") as tmp:
            for g in range(groups.num_rows if groups is not None else 0):
                values = [groups.column(k)[g] for k in keys]
                mask = None
                for k, v in zip(keys, values, strict=True):
                    eq = pc.equal(table.column(k), v)
                    mask = eq if mask is None else pc.and_(mask, eq)
                local = os.path.join(tmp, f"part-{g:05d}.parquet")
                pq.write_table(data.filter(mask), local, compression="snappy")
                folder = "/".join(f"{k}={_partition_text(v.as_py())}" for k, v in zip(keys, values, strict=True))
                fs.copy_from_local(local, f"{staging}/{folder}/part-{g:05d}.parquet")
        return self._commit(batch_id, staging, extra)

    def _skipped(self, batch_id: int) -> dict:
        info = self.commit_info(batch_id)
        info["skipped"] = True
        return info

    def _fresh_staging(self, batch_id: int) -> str:
        """An empty staging folder for the batch, after undoing what a crashed attempt moved."""
        staging = f"{self.output}/_staging/batch_id={batch_id}"
        manifest = f"{staging}.manifest.json"
        if fs.exists(manifest):     # a crashed attempt may have moved some files already
            for target in json.loads(fs.read_text(manifest)):
                fs.delete(target)
            fs.delete(manifest)
        fs.delete(staging)
        return staging

    def _commit(self, batch_id: int, staging: str, extra: Mapping[str, Any] | None) -> dict:
        """Move the staged files to their final names (listed in a manifest first), then write the marker."""
        manifest = f"{staging}.manifest.json"
        sources = [p for p in fs.list_files(staging, recursive=True)
                   if name_of(p).startswith("part-") and not name_of(p).endswith(".crc")]
        moves = []
        for n, src in enumerate(sources):
            relative = src.split(f"batch_id={batch_id}/", 1)[1]
            folder = relative.rsplit("/", 1)[0] if "/" in relative else ""
            target = "/".join(p for p in (self.output, folder, f"part-{batch_id:010d}-{n:05d}.parquet") if p)
            moves.append((src, target))
        fs.write_text(manifest, json.dumps([t for _, t in moves]))
        for src, target in moves:
            fs.rename(src, target)
        info = {"batch_id": batch_id, "files": len(moves), "committed_at": time.time(), **(extra or {})}
        fs.write_text(self.marker(batch_id), json.dumps(info))
        fs.delete(staging)
        fs.delete(manifest)
        info["skipped"] = False
        return info


def _partition_text(value) -> str:
    """A partition value as Spark writes it in a folder name (dates ISO, numbers plain)."""
    return value.isoformat() if isinstance(value, dt.date) else str(value)
