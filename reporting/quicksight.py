r"""QuickSight manifests and Athena DDL for the tables this project writes.

QuickSight cannot read Parquet or Delta tables from S3: the summary job exports each table as CSV (with a header)
or JSON lines and writes a manifest next to it in QuickSight's own format (documented in the
QuickSight user guide, "Supported formats for Amazon S3 manifest files")::

    {"fileLocations": [{"URIs": ["s3://bucket/.../part-00000-....csv"]}],
     "globalUploadSettings": {"format": "CSV", "delimiter": ",", "textqualifier": "\"",
                              "containsHeader": "true"}}

Rules from that page that shape the code: the manifest's name must end in ``.json``; all files of
one manifest share one format and the same columns; for JSON only ``format`` is given (no
delimiter, textqualifier or containsHeader); at most 1000 files, 1 GB each, 10 GB in all.

URIs: the manifest lists the files actually written (listed after the write, ``part-*`` only, so
``_SUCCESS`` and checksum files are never named). An ``s3a://`` (or ``s3n://``) location becomes
``s3://`` — the same object, the scheme QuickSight and Athena know. A local location becomes an
absolute local path (QuickSight cannot read it; it is there so a local run's manifest can be
checked and the files found; run on S3 for a manifest QuickSight can use).

Athena: ``create_table_ddl`` writes ``CREATE EXTERNAL TABLE``. For a Delta table (the default
``storage.format``) that is Athena's Delta Lake form (Athena user guide, "Query Delta Lake
tables")::

    CREATE EXTERNAL TABLE IF NOT EXISTS `db`.`t` LOCATION 's3://bucket/t/'
    TBLPROPERTIES ('table_type' = 'DELTA');

with no columns, SerDe or other properties (Athena refuses them for Delta tables): it reads the
schema and the partitions from the table's transaction log, so a new date is visible without a
repair and a file a Delta transaction removed is never read. For a Parquet table partitioned by
``date`` (Hive-style ``date=yyyy-MM-dd`` folders, as Spark writes them) it lists the columns,
with partition projection (Athena computes the partitions from the table properties, nothing to
repair) or with a ``MSCK REPAIR TABLE`` note to load new partitions into the catalog.
"""
from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from runtime import fs

__all__ = [
    "MAX_MANIFEST_FILES",
    "athena_type",
    "create_table_ddl",
    "export_columns",
    "for_export",
    "manifest",
    "part_files",
    "quicksight_uri",
    "write_manifest",
]

MAX_MANIFEST_FILES = 1000  # QuickSight's limit of files per manifest


def quicksight_uri(path: str) -> str:
    """What a manifest or DDL names for ``path``: ``s3://`` for s3a/s3n/s3 URIs, an absolute path
    for local files (``file:`` URIs included).
    """
    for scheme in ("s3a://", "s3n://", "s3://"):
        if path.startswith(scheme):
            return "s3://" + path[len(scheme):]
    local = fs.local_path(path)
    if local is None:
        raise ValueError(f"QuickSight and Athena read S3 only; cannot name {path!r} in a manifest or DDL")
    return os.path.abspath(local)


def for_export(df: DataFrame) -> DataFrame:
    """QuickSight-friendly columns: arrays joined with '|' (CSV cannot hold arrays)."""
    return df.select(*[F.concat_ws("|", F.col(f.name)).alias(f.name) if isinstance(f.dataType, T.ArrayType)
                       else F.col(f.name) for f in df.schema.fields])


def part_files(folder: str, ext: str) -> list[str]:
    """The ``part-*<ext>`` files Spark wrote under ``folder`` (recursively), sorted, as full paths:
    what a manifest names (never ``_SUCCESS`` or checksum files).
    """
    return [f for f in fs.list_files(folder, recursive=True)
            if posixpath.basename(f).startswith("part-") and f.endswith(ext)]


def manifest(uris: Sequence[str] = (), prefixes: Sequence[str] = (), fmt: str = "csv",
             contains_header: bool = True, delimiter: str = ",", text_qualifier: str = '"') -> dict:
    """A QuickSight manifest (a dict, ``json.dumps`` it) for files ``uris`` and/or ``prefixes``.

    ``uris``/``prefixes`` are converted with ``quicksight_uri``. ``fmt`` is csv, tsv or json.
    """
    fmt = fmt.upper()
    if fmt not in ("CSV", "TSV", "JSON"):
        raise ValueError(f"QuickSight export format must be csv, tsv or json, got {fmt.lower()!r}")
    if not uris and not prefixes:
        raise ValueError("a QuickSight manifest needs at least one file URI or prefix")
    if len(uris) > MAX_MANIFEST_FILES:
        raise ValueError(f"QuickSight reads at most {MAX_MANIFEST_FILES} files per manifest, got {len(uris)}")
    locations: list[dict] = []
    if uris:
        locations.append({"URIs": [quicksight_uri(u) for u in uris]})
    if prefixes:
        locations.append({"URIPrefixes": [quicksight_uri(p) for p in prefixes]})
    settings: dict = {"format": fmt}
    if fmt != "JSON":  # QuickSight: for JSON give the format only
        settings.update({"delimiter": "\t" if fmt == "TSV" else delimiter, "textqualifier": text_qualifier,
                         "containsHeader": "true" if contains_header else "false"})
    return {"fileLocations": locations, "globalUploadSettings": settings}


def write_manifest(path: str, uris: Sequence[str], fmt: str = "csv") -> dict:
    """Write the manifest for ``uris`` to ``path`` (must end in .json) and return it."""
    if not path.endswith(".json"):
        raise ValueError(f"QuickSight manifest names must end in .json, got {path!r}")
    content = manifest(uris=uris, fmt=fmt)
    fs.write_text(path, json.dumps(content, indent=2) + "\n")
    return content


def athena_type(data_type: T.DataType) -> str:
    """The Athena (Hive DDL) type of a Spark type."""
    if isinstance(data_type, T.StructType):
        inner = ",".join(f"{f.name}:{athena_type(f.dataType)}" for f in data_type.fields)
        return f"struct<{inner}>"
    if isinstance(data_type, T.ArrayType):
        return f"array<{athena_type(data_type.elementType)}>"
    if isinstance(data_type, T.MapType):
        return f"map<{athena_type(data_type.keyType)},{athena_type(data_type.valueType)}>"
    if isinstance(data_type, T.TimestampNTZType):
        return "timestamp"
    return data_type.simpleString()  # bigint, int, smallint, tinyint, double, float, string, boolean, date,
    #                                   timestamp, decimal(p,s), binary: the same words in Hive DDL


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def create_table_ddl(table: str, schema: T.StructType, location: str, *, database: str | None = None,
                     partition_column: str = "date", projection: bool = True,
                     projection_start: str = "2018-01-01", table_format: str = "parquet",
                     comment: str | None = None) -> str:
    """``CREATE EXTERNAL TABLE`` for a table at ``location`` partitioned by ``partition_column``
    (``yyyy-MM-dd`` values). The partition column is declared ``string`` (what partition
    projection of type date maps); query it as ``WHERE "date" = '2026-01-07'``.

    ``table_format`` delta writes Athena's Delta Lake form (schema and partitions read from the
    Delta log, so no columns, projection or repair); parquet the column list. Anything else is
    refused (Athena would read the files wrongly).
    """
    if table_format not in ("delta", "parquet"):
        raise ValueError(f"Athena DDL is written for delta or parquet tables, not {table_format!r} ({location})")
    name = f"{_quote(database)}.{_quote(table)}" if database else _quote(table)
    where = quicksight_uri(location).rstrip("/") + "/"
    lines: list[str] = []
    if comment:
        lines += [f"-- {line}" if line else "--" for line in comment.splitlines()]
    if not where.startswith("s3://"):
        lines.append(f"-- NOTE: {where} is a local path; Athena reads S3 only: point LOCATION at the S3 copy.")
    if table_format == "delta":
        lines += [f"CREATE EXTERNAL TABLE IF NOT EXISTS {name}", f"LOCATION '{where}'",
                  "TBLPROPERTIES ('table_type' = 'DELTA');", ""]
        return "\n".join(lines)
    columns = [f for f in schema.fields if f.name != partition_column]
    width = max((len(_quote(f.name)) for f in columns), default=0)
    body = ",\n".join(f"  {_quote(f.name):<{width}} {athena_type(f.dataType)}" for f in columns)
    lines += [f"CREATE EXTERNAL TABLE IF NOT EXISTS {name} (", body, ")",
              f"PARTITIONED BY ({_quote(partition_column)} string)", "STORED AS PARQUET",
              f"LOCATION '{where}'"]
    if projection:
        pc = partition_column
        lines += ["TBLPROPERTIES (",
                  "  'projection.enabled' = 'true',",
                  f"  'projection.{pc}.type' = 'date',",
                  f"  'projection.{pc}.format' = 'yyyy-MM-dd',",
                  f"  'projection.{pc}.range' = '{projection_start},NOW',",
                  f"  'projection.{pc}.interval' = '1',",
                  f"  'projection.{pc}.interval.unit' = 'DAYS',",
                  f"  'storage.location.template' = '{where}{pc}=${{{pc}}}/'",
                  ");",
                  "-- Partition projection: Athena computes the date partitions, no MSCK REPAIR TABLE needed.",
                  ""]
    else:
        lines += [";", "-- New date partitions are not in the catalog until you run:",
                  f"MSCK REPAIR TABLE {name};", ""]
    return "\n".join(lines)


def export_columns(header_line: str, delimiter: str = ",") -> list[str]:
    """The column names in a CSV header line (for checks)."""
    return [part.strip().strip('"') for part in header_line.rstrip("\r\n").split(delimiter)]

