"""The late-label file's contract: which rows are labels we can merge, and why the others are not.

Confirmed frauds and anomaly verdicts (chargebacks, incident tickets) arrive days after the
event, as a CSV file with a header or JSON lines, one row per labelled event:

* the data set's event id column (``transaction_id``, ``event_id``): required, non-empty;
* ``label``: required, 0 or 1 (1: fraud / anomaly confirmed; 0: confirmed genuine);
* ``known_at``: when the label became known (a timestamp Spark parses, ISO-8601; without a zone
  it is UTC). Optional column: when the file has none, every row's ``known_at`` is the time its
  file arrived (the file's modification time, on S3 its upload time), which stays the same when
  the file is merged again. When the column is there, every row must have a value.

Other columns are not used (the job names them). Every row is either valid or rejected with
every reason it fails, never silently dropped or changed: ``missing <id>``, ``missing label``,
``invalid label`` (not 0/1), ``missing known_at``, ``unparseable known_at``, ``known_at in the
future`` (after the run started), ``unparseable record`` (a JSON line Spark cannot read),
``conflicting labels for one <id> in the file`` (every row of an id that appears with different
labels or known_at) and ``duplicate row`` (the same id, label and known_at again: the first is
kept, the repeats are rejected so rows in = valid + rejected holds).
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ingest.validation import CORRUPT, REASON, parse_id, parse_label, parse_time

LABEL = "label"
KNOWN_AT = "known_at"
SOURCE = "source"              # the file a label came from
ARRIVED = "_arrived_at"        # the file's modification time (default known_at)


class LabelFileError(ValueError):
    """A label file without the columns the contract needs; the message names them."""


@dataclass(frozen=True)
class CheckedLabels:
    """Every row of a label file with a nullable ``reason``; ``valid`` and ``rejected`` split it.

    ``checked`` columns: the event id, ``label``, ``known_at``, ``source``, ``reason`` and
    ``record`` (the row's source values as text, for the report of rejected rows).
    """

    checked: DataFrame
    id_column: str
    ignored_columns: tuple[str, ...]

    @property
    def valid(self) -> DataFrame:
        return self.checked.where(F.col(REASON).isNull()).select(self.id_column, LABEL, KNOWN_AT, SOURCE)

    @property
    def rejected(self) -> DataFrame:
        return self.checked.where(F.col(REASON).isNotNull()).select("record", REASON, SOURCE)


def with_file_facts(raw_df: DataFrame) -> DataFrame:
    """``raw_df`` (read from files) plus the file each row came from and its arrival time."""
    return raw_df.select("*", F.col("_metadata.file_path").alias(SOURCE),
                         F.col("_metadata.file_modification_time").alias(ARRIVED))


def _record(columns: list[str]) -> Column:
    """The row's source values as one text, ``name=value`` joined by commas (null shown as empty)."""
    return F.concat_ws(", ", *[F.concat(F.lit(f"{c}="), F.coalesce(F.col(f"`{c}`").cast("string"), F.lit("")))
                               for c in columns])


def validate_labels(raw_df: DataFrame, id_column: str, started_at: Column) -> CheckedLabels:
    """Check the rows of a label file read by ``runtime.storage.read_raw`` (CSV as text, JSON
    lines with ``_corrupt_record``) and given their file facts by :func:`with_file_facts`.

    ``id_column``: the data set's event id; ``started_at``: the run's start time (a timestamp
    Column), later than which no label can have become known.
    """
    columns = [c for c in raw_df.columns if c not in (SOURCE, ARRIVED)]
    missing = [c for c in (id_column, LABEL) if c not in columns]
    if missing:
        data = [c for c in columns if c != CORRUPT]
        raise LabelFileError(f"the label file lacks column(s) {', '.join(missing)}; it has: "
                             f"{', '.join(data) or '(none)'} (expected {id_column}, {LABEL} and optionally {KNOWN_AT})")
    types = {f.name: f.dataType for f in raw_df.schema.fields}
    event_id, id_reason = parse_id(F.col(f"`{id_column}`"), id_column)
    label, label_reason = parse_label(F.col(LABEL))
    label_reason = F.when(label.isNull() & label_reason.isNull(), F.lit("missing label")).otherwise(label_reason)
    if KNOWN_AT in columns:
        known_at, known_reason = parse_time(F.col(KNOWN_AT), types[KNOWN_AT], None, name=KNOWN_AT)
    else:
        known_at, known_reason = F.col(ARRIVED).cast(T.TimestampType()), F.lit(None).cast("string")
    future = F.when(known_at > started_at, F.lit(f"{KNOWN_AT} in the future"))
    reasons = [id_reason, label_reason, known_reason, future]
    if CORRUPT in columns:
        reasons.insert(0, F.when(F.col(CORRUPT).isNotNull(), F.lit("unparseable record")))
    data_columns = [c for c in columns if c != CORRUPT]
    record = F.coalesce(F.col(CORRUPT), _record(data_columns)) if CORRUPT in columns else _record(data_columns)
    staged = raw_df.select(
        event_id.alias(id_column), label.alias(LABEL), known_at.alias(KNOWN_AT), F.col(SOURCE),
        record.alias("record"), F.monotonically_increasing_id().alias("_order"),
        F.concat_ws("; ", F.array(*reasons)).alias(REASON))
    staged = staged.withColumn(REASON, F.when(F.col(REASON) != "", F.col(REASON)))
    # Among the good rows of an id: different values conflict (which is right is not ours to
    # guess, so none is merged); the same values again are duplicates (the first is kept).
    good = F.col(REASON).isNull()
    per_id = Window.partitionBy(id_column, good)
    versions = F.size(F.collect_set(F.struct(LABEL, KNOWN_AT)).over(per_id))
    rank = F.row_number().over(per_id.orderBy("_order"))
    reason = (F.when(~good, F.col(REASON))
              .when(versions > 1, F.lit(f"conflicting labels for one {id_column} in the file"))
              .when(rank > 1, F.lit("duplicate row")))
    checked = staged.withColumn(REASON, reason).drop("_order")
    ignored = tuple(c for c in data_columns if c not in (id_column, LABEL, KNOWN_AT))
    return CheckedLabels(checked, id_column, ignored)
