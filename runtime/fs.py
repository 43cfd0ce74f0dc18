"""The one file API of the project: small files and folders on local paths and ``s3a://`` alike.

Plain paths and ``file:`` URIs use this machine's file system and need no Spark. Other URIs
(``s3a://``, ``hdfs://``) go through Hadoop's FileSystem of the active SparkSession, so they
reach whatever the session is configured for (``aws.endpoint_url`` points s3a at moto in tests).

``write_text``/``write_bytes`` are whole-or-nothing: a reader never sees half a file. Locally
the file is written beside the target and renamed over it; on S3 an object appears only when
its upload completes; on other Hadoop file systems it is written beside the target and renamed.
Nothing here depends on a folder rename being atomic (it is not on S3).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_OBJECT_STORES = ("s3a://", "s3n://", "s3://")


class FsError(RuntimeError):
    """A path cannot be reached (no SparkSession for a URI, a failed rename, ...)."""


def has_scheme(path: str) -> bool:
    """True for URIs like ``s3a://b/k`` or ``file:/x``; False for plain local paths."""
    path = str(path)
    return bool(_SCHEME.match(path)) and not re.match(r"^[a-zA-Z]:[\\/]", path)


def local_path(path: str) -> str | None:
    """The local file-system path of ``path`` (a plain path or a ``file:`` URI), else None."""
    path = str(path)
    if path.startswith("file:"):
        rest = re.sub(r"^file:(//)?", "", path)
        return rest if rest.startswith("/") else "/" + rest
    return None if has_scheme(path) else path


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for URIs and local paths alike."""
    if has_scheme(base):
        return "/".join([str(base).rstrip("/"), *[str(p).strip("/") for p in parts]])
    return str(Path(base, *parts))


def _hadoop(path: str):
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise FsError(f"a SparkSession is needed to reach {path}")
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return jvm, hpath, hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def exists(path: str) -> bool:
    local = local_path(path)
    if local is not None:
        return Path(local).exists()
    _, hpath, fs = _hadoop(path)
    return bool(fs.exists(hpath))


def read_bytes(path: str) -> bytes:
    local = local_path(path)
    if local is not None:
        return Path(local).read_bytes()
    jvm, hpath, fs = _hadoop(path)
    stream = fs.open(hpath)
    buf = jvm.java.io.ByteArrayOutputStream()
    jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, buf, 1 << 16, True)
    return bytes(buf.toByteArray())


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Write (overwrite) a file whole or not at all, creating parent folders."""
    local = local_path(path)
    if local is not None:
        target = Path(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.writing")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # atomic on one file system: readers never see half a file
        return
    jvm, hpath, fs = _hadoop(path)
    direct = str(path).startswith(_OBJECT_STORES)  # an object appears only once its upload completes
    target = hpath if direct else jvm.org.apache.hadoop.fs.Path(hpath.getParent(), f".{hpath.getName()}.writing")
    out = fs.create(target, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()
    if not direct:
        if fs.exists(hpath):
            fs.delete(hpath, False)
        if not fs.rename(target, hpath):
            raise FsError(f"could not rename {target.toString()} to {path}")


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def list_dirs(path: str) -> list[str]:
    """Names of the folders directly under ``path``, sorted ([] when it does not exist)."""
    local = local_path(path)
    if local is not None:
        p = Path(local)
        return sorted(c.name for c in p.iterdir() if c.is_dir()) if p.is_dir() else []
    _, hpath, fs = _hadoop(path)
    if not fs.exists(hpath):
        return []
    return sorted(s.getPath().getName() for s in fs.listStatus(hpath) if s.isDirectory())


def list_files(path: str, recursive: bool = False) -> list[str]:
    """The files under ``path`` as full paths (URIs for URIs), sorted ([] when it does not exist)."""
    local = local_path(path)
    if local is not None and not str(path).startswith("file:"):
        p = Path(local)
        if not p.is_dir():
            return []
        found = p.rglob("*") if recursive else p.iterdir()
        return sorted(str(f) for f in found if f.is_file())
    _, hpath, fs = _hadoop(path)
    if not fs.exists(hpath):
        return []
    found = []
    files = fs.listFiles(hpath, recursive)
    while files.hasNext():
        found.append(str(files.next().getPath().toString()))
    return sorted(found)


def delete(path: str) -> None:
    """Remove a file or a folder with everything in it (nothing when it does not exist)."""
    local = local_path(path)
    if local is not None:
        p = Path(local)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        return
    _, hpath, fs = _hadoop(path)
    if fs.exists(hpath):
        fs.delete(hpath, True)




def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None and numpy scalars as Python numbers (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON (NaN/inf as null), whole or not at all."""
    write_text(path, json.dumps(json_safe(data), indent=2, sort_keys=True, default=str))


def read_json(path: str) -> Any:
    return json.loads(read_text(path))
