"""Stream record decoding: raw payloads -> canonical events, and dead letters with a reason.

Pure ``DataFrame -> DataFrame`` functions that work on static and streaming frames alike, so they
are tested on static frames with the Kinesis connector's schema (``data`` binary,
``streamName``, ``partitionKey``, ``sequenceNumber``, ``approximateArrivalTimestamp``) and on
text frames from a landing prefix of JSON lines (what Kinesis Data Firehose writes to S3).

Every record ends up in exactly one of two frames: ``valid`` (canonical columns as
:mod:`ingest.validation` produces them for batch input, plus ``arrival_time``) or
``dead_letters`` (the raw ``payload``, a ``reason``, ``arrival_time`` and ``record_source``).
Record-level problems are found here (oversized, bad JSON, a JSON value of the wrong type);
value checks (missing ids, unparseable times, negative amounts, duplicate ids in the batch) are
the batch validator's own, so batch and stream agree on what a valid event is.

Stream-only checks against earlier micro-batches (late events, ids already processed) are in
:func:`split_late_and_duplicates`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ingest.validation import PRIOR_REASON, REASON, Validated

#: The normalised payload frame every source is turned into before decoding.
PAYLOAD_COLUMNS = ("payload", "payload_bytes", "arrival_time", "record_source")
DEAD_LETTER_COLUMNS = ("payload", "reason", "arrival_time", "record_source")

_CORRUPT = "_corrupt_record"
_TEXT = "_text"
_TYPED = "_typed"

KINESIS_SCHEMA = T.StructType([
    T.StructField("data", T.BinaryType()),
    T.StructField("streamName", T.StringType()),
    T.StructField("partitionKey", T.StringType()),
    T.StructField("sequenceNumber", T.StringType()),
    T.StructField("approximateArrivalTimestamp", T.TimestampType()),
])


class DecodeSchemaError(ValueError):
    """A source frame lacks the columns its decoder needs."""


def _require(df: DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DecodeSchemaError(f"{what} frame lacks column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")


def payloads_from_kinesis(df: DataFrame) -> DataFrame:
    """Connector rows -> payload frame. ``data`` is decoded as UTF-8; its size is counted in bytes."""
    _require(df, [f.name for f in KINESIS_SCHEMA.fields], "aws-kinesis")
    return df.select(
        F.decode(F.col("data"), "UTF-8").alias("payload"),
        F.coalesce(F.octet_length(F.col("data")), F.lit(0)).alias("payload_bytes"),
        F.col("approximateArrivalTimestamp").cast("timestamp").alias("arrival_time"),
        F.concat_ws("/", F.col("streamName"), F.col("partitionKey"), F.col("sequenceNumber")).alias("record_source"),
    )


def payloads_from_text(df: DataFrame) -> DataFrame:
    """Text-source rows (``value``, one JSON document per line) -> payload frame.

    The arrival time is the file's modification time (when the producer finished writing it) and
    the record source its path, both from the file source's hidden ``_metadata`` column.
    """
    _require(df, ["value"], "text")
    return df.select(
        F.col("value").alias("payload"),
        F.coalesce(F.octet_length(F.col("value")), F.lit(0)).alias("payload_bytes"),
        F.col("_metadata.file_modification_time").alias("arrival_time"),
        F.col("_metadata.file_path").alias("record_source"),
    )


@dataclass(frozen=True)
class RecordSchema:
    """The JSON fields a data set's records carry (source names), which must be JSON numbers, and
    the event id column (``Dataset.record_fields`` and ``Dataset.event_id`` give them).
    """

    fields: tuple[str, ...]
    numeric: tuple[str, ...]
    id_column: str


def _text_struct(schema: RecordSchema) -> T.StructType:
    # Every field as text (a nested object or array becomes its JSON text), like CSV input:
    # the batch validator then does the value checks.
    return T.StructType([T.StructField(f, T.StringType()) for f in schema.fields]
                        + [T.StructField(_CORRUPT, T.StringType())])


def _typed_struct(schema: RecordSchema) -> T.StructType:
    return T.StructType([T.StructField(f, T.DoubleType()) for f in schema.numeric]
                        + [T.StructField(_CORRUPT, T.StringType())])


def _record_struct(schema: RecordSchema) -> T.StructType:
    # What a good record is: numbers where numbers belong, any scalar as text elsewhere.
    return T.StructType([T.StructField(f, T.DoubleType() if f in schema.numeric else T.StringType())
                         for f in schema.fields] + [T.StructField(_CORRUPT, T.StringType())])


_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}
_RECORD = "_record"


def _parses_as(field: str, sql_type: str) -> Column:
    """True where the payload's ``field`` is a JSON value of ``sql_type`` (an array or an object)."""
    parsed = F.from_json("payload", f"`{field}` {sql_type}, {_CORRUPT} STRING", _JSON_OPTIONS)
    return parsed[_CORRUPT].isNull() & parsed[field].isNotNull()


def record_problem(schema: RecordSchema, max_record_bytes: int) -> Column:
    """Reason a parsed payload is unusable as a record, or null (needs the parse columns).

    ``_record`` is the payload parsed as a good record; only where that parse failed are the
    payload's fields also parsed as text (``_text``) and as numbers (``_typed``) to tell bad JSON
    from a value of the wrong type.
    """
    failed = F.col(f"{_RECORD}.{_CORRUPT}").isNotNull()
    wrong_types = []
    for field in schema.numeric:
        text_value = F.col(f"{_TEXT}.`{field}`")
        # Present but not a JSON number (or a numeric string like "12.5": records carry numbers).
        wrong_types.append(F.when(text_value.isNotNull() & F.col(f"{_TYPED}.`{field}`").isNull(),
                                  F.lit(f"wrong type {field} (expected a number)")))
    for field in schema.fields:
        if field in schema.numeric:
            continue
        value = F.when(failed, F.col(f"{_TEXT}.`{field}`")).otherwise(F.col(f"{_RECORD}.`{field}`"))
        text_value = F.ltrim(value)
        # An array or object reads as its JSON text; a string such as "[t1]" is a good id. Only
        # values that look like one are parsed again, as an array and as an object, to tell.
        looks_nested = text_value.startswith("{") | text_value.startswith("[")
        wrong_types.append(F.when(looks_nested & (_parses_as(field, "ARRAY<STRING>") | _parses_as(field, "MAP<STRING,STRING>")),
                                  F.lit(f"wrong type {field} (expected a scalar)")))
    wrong = F.concat_ws("; ", F.array(*wrong_types))   # concat_ws skips the nulls
    trimmed = F.ltrim(F.col("payload"))
    return (
        F.when(F.col("payload").isNull() | (F.trim(F.col("payload")) == ""), F.lit("empty record"))
        .when(F.col("payload_bytes") > F.lit(int(max_record_bytes)),
              F.concat(F.lit("oversized record ("), F.col("payload_bytes").cast("string"),
                       F.lit(f" bytes > {int(max_record_bytes)})")))
        .when(~trimmed.startswith("{") | (failed & F.col(f"{_TEXT}.{_CORRUPT}").isNotNull()), F.lit("bad JSON"))
        .when(wrong != "", wrong)
    )


def parse_payloads(payload_df: DataFrame, schema: RecordSchema, max_record_bytes: int) -> DataFrame:
    """The payload frame plus ``_problem`` (record-level reason or null) and one column per field.

    Numeric fields come out as doubles, the others as text. Each payload is parsed once as a good
    record; the two diagnostic parses run only for payloads where that failed.
    """
    _require(payload_df, PAYLOAD_COLUMNS, "payload")
    record = F.from_json("payload", _record_struct(schema), _JSON_OPTIONS)
    parsed = payload_df.select(*PAYLOAD_COLUMNS, record.alias(_RECORD))
    failed = F.col(f"{_RECORD}.{_CORRUPT}").isNotNull()
    parsed = parsed.select(
        *PAYLOAD_COLUMNS, _RECORD,
        F.when(failed, F.from_json("payload", _text_struct(schema), _JSON_OPTIONS)).alias(_TEXT),
        F.when(failed, F.from_json("payload", _typed_struct(schema), _JSON_OPTIONS)).alias(_TYPED),
    )
    return parsed.select(
        *PAYLOAD_COLUMNS,
        record_problem(schema, max_record_bytes).alias("_problem"),
        *[F.col(f"{_RECORD}.`{f}`").alias(f) for f in schema.fields],
    )


#: Record columns carried next to the canonical ones in ``Decoded.valid`` (not features).
CARRIED_COLUMNS = ("arrival_time", "payload", "record_source")


def _carried(src: Mapping[str, Column]) -> list[Column]:
    return [src["_arrival_time"].cast("timestamp").alias("arrival_time"),
            src["_payload"].alias("payload"), src["_record_source"].alias("record_source")]


@dataclass(frozen=True)
class Decoded:
    """``records``: every input record with canonical columns, CARRIED_COLUMNS and ``reason``.

    ``valid`` (reason null: canonical + CARRIED_COLUMNS) and ``dead_letters``
    (DEAD_LETTER_COLUMNS) are views of it, so persisting ``records`` decodes once.
    """

    records: DataFrame
    canonical: tuple[str, ...]
    id_column: str

    @property
    def valid(self) -> DataFrame:
        return self.records.where(F.col(REASON).isNull()).select(*self.canonical, *CARRIED_COLUMNS)

    @property
    def dead_letters(self) -> DataFrame:
        return self.records.where(F.col(REASON).isNotNull()).select(*DEAD_LETTER_COLUMNS)

    def persist(self, level) -> "Decoded":
        return Decoded(self.records.persist(level), self.canonical, self.id_column)


def decode_records(payload_df: DataFrame, *, schema: RecordSchema, validate: Callable[[DataFrame], Validated],
                   max_record_bytes: int) -> Decoded:
    """Split a payload frame into canonical events and dead letters (nothing is dropped).

    One pass: every parsed record goes through ``validate`` (the data set's batch validator of raw
    rows), which keeps a record-level problem (``_problem``) as the reason when there is one, and
    adds its own value checks otherwise.
    """
    parsed = parse_payloads(payload_df, schema, max_record_bytes)
    # Source columns the validator carries as text are named with a leading underscore so it
    # does not pass them through as extra columns; we map them back by position below.
    records = parsed.select(
        *schema.fields,
        F.col("payload").alias("_payload"),
        F.col("arrival_time").alias("_arrival_time"),
        F.col("record_source").alias("_record_source"),
        F.col("_problem").alias(PRIOR_REASON),
    )
    validated = validate(records)
    src = {name: F.col(f"_src_{i}") for i, name in enumerate(validated.source_columns)}
    checked = validated.checked.select(*validated.canonical, *_carried(src), F.col(REASON))
    return Decoded(checked, validated.canonical, schema.id_column)


def future_reason(max_skew_seconds: int) -> str:
    """The dead-letter reason of an event dated after its own arrival (plus the allowed clock skew)."""
    return f"future (event_time more than {max_skew_seconds} s after its arrival_time)"


def split_late_and_duplicates(valid_df: DataFrame, history_df: DataFrame | None, *, id_column: str,
                              watermark, max_skew_seconds: int | None = None) -> tuple[DataFrame, DataFrame]:
    """(accepted, rejected-with-reason) against earlier micro-batches' events.

    ``max_skew_seconds`` (or None): events dated more than this after their ``arrival_time`` are
    "future" - a producer's wrong clock or a poisoned record, which must not move the watermark
    (only accepted events do). ``watermark`` (a datetime or None): events with an earlier event
    time are "late" - the history needed to give them the batch features is gone. Events whose
    id is in ``history_df`` were processed already (a producer retry or a replayed record):
    "duplicate <id> (already processed)". ``rejected`` has the columns of ``valid_df`` + reason.
    """
    reason = F.lit(None).cast("string")
    if max_skew_seconds is not None:
        reason = F.when(F.col("event_time") > F.col("arrival_time") + F.expr(f"INTERVAL {int(max_skew_seconds)} SECONDS"),
                        F.lit(future_reason(max_skew_seconds)))
    if watermark is not None:
        reason = F.coalesce(reason, F.when(
            F.col("event_time") < F.lit(watermark).cast("timestamp"),
            F.lit(f"late (event_time before the watermark {watermark.isoformat()})")))
    marked = valid_df.withColumn(REASON, reason)
    if history_df is not None:
        seen = history_df.select(F.col(id_column).alias("_seen_id")).distinct().withColumn("_seen", F.lit(True))
        marked = (marked.join(seen, marked[id_column] == seen["_seen_id"], "left")
                  .withColumn(REASON, F.coalesce(F.col(REASON), F.when(
                      F.col("_seen"), F.lit(f"duplicate {id_column} (already processed)"))))
                  .drop("_seen_id", "_seen"))
    accepted = marked.where(F.col(REASON).isNull()).drop(REASON)
    rejected = marked.where(F.col(REASON).isNotNull())
    return accepted, rejected


def rejected_as_dead_letters(rejected_df: DataFrame) -> DataFrame:
    """Late/duplicate events (with CARRIED_COLUMNS) as dead letters keeping the raw payload."""
    return rejected_df.select(*DEAD_LETTER_COLUMNS)
