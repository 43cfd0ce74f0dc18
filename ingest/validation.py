"""Input contract: map a user's columns onto the canonical schema and split valid rows from bad ones.

Every input row ends up in exactly one of two frames: ``valid`` (canonical names and types) or
``quarantine`` (every source column kept as text, plus ``reason``). Nothing is dropped, so
rows in = valid + quarantined always holds.

Canonical telemetry: event_id, device_id, site_id, event_time, <measures...>, label.
Canonical transactions: transaction_id, event_time, customer_id, terminal_id, amount, label.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

REASON = "reason"
EVENT_DATE = "event_date"   # quarantine column: the rejected event's date, null when its time did not parse
CORRUPT = "_corrupt_record"
#: Optional input column holding a reason found before validation (the stream's record-level
#: problems): a row with one is quarantined with exactly that reason.
PRIOR_REASON = "_problem"

TELEMETRY_REQUIRED = ("device_id", "event_time")
TELEMETRY_OPTIONAL = ("event_id", "site_id", "label")
TRANSACTION_REQUIRED = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount")
TRANSACTION_OPTIONAL = ("label",)


class SchemaError(ValueError):
    """The input lacks columns the mapping names; the message lists them and what the input has."""


@dataclass(frozen=True)
class Validated:
    """One validation pass: ``checked`` holds every row with a nullable ``reason``."""

    checked: DataFrame
    canonical: tuple[str, ...]
    source_columns: tuple[str, ...]

    @property
    def valid(self) -> DataFrame:
        keep = [c for c in self.checked.columns if c != REASON and not c.startswith("_src_")]
        return self.checked.where(F.col(REASON).isNull()).select(*keep)

    @property
    def quarantine(self) -> DataFrame:
        return self.checked.where(F.col(REASON).isNotNull()).select(
            *[F.col(f"_src_{i}").alias(name) for i, name in enumerate(self.source_columns)],
            F.col(REASON),
            F.current_timestamp().alias("quarantined_at"),
            # the event's date when its time parsed: rebuilding a date replaces that date's rejects
            F.to_date("event_time").alias(EVENT_DATE),
        )


def _check_columns(df: DataFrame, mapping: Mapping[str, str], required: Sequence[str],
                   optional: Sequence[str], measures: Sequence[str] = (), *, dataset: str = "<dataset>") -> dict[str, str]:
    """Resolve canonical -> source names, raising SchemaError naming every missing column and
    how to map it (``--set schema.<dataset>.columns.<name>=<source column>``, or "" for a column
    the input may lack).
    """
    unknown = set(mapping) - set(required) - set(optional)
    if unknown:
        raise SchemaError(f"unknown canonical column(s) in the mapping: {', '.join(sorted(unknown))}")
    resolved = {name: mapping.get(name, name) for name in required}
    resolved.update({name: mapping[name] for name in optional if mapping.get(name)})
    missing, hints = [], []
    for canonical, source in resolved.items():
        if source in df.columns:
            continue
        missing.append(f"{source} (for {canonical})" if source != canonical else source)
        hint = f"--set schema.{dataset}.columns.{canonical}=<your column>"
        if canonical in optional:
            hint += f" (or --set schema.{dataset}.columns.{canonical}= when the input has none)"
        hints.append(hint)
    absent = [m for m in measures if m not in df.columns]
    if absent:
        missing.extend(f"{m} (a measure)" for m in absent)
        hints.append(f"--set 'schema.{dataset}.measures=[<your numeric columns>]' (the measures are read "
                     "under their own names)")
    if missing:
        raise SchemaError(
            f"input is missing column(s) {', '.join(missing)}; it has: "
            f"{', '.join(c for c in df.columns if not c.startswith('_'))}. "
            f"Map them in the config (schema.{dataset}.columns) or on the command line: {'; '.join(hints)}"
        )
    return resolved


def _text(col: Column) -> Column:
    return F.trim(col.cast("string"))


def parse_id(source: Column, name: str) -> tuple[Column, Column]:
    """(canonical id, reason or null): ids are non-empty strings."""
    value = _text(source)
    reason = F.when(value.isNull() | (value == ""), F.lit(f"missing {name}"))
    return value, reason


def parse_time(source: Column, source_type: T.DataType, timestamp_format: str | None,
               name: str = "event_time") -> tuple[Column, Column]:
    """(timestamp, reason or null): missing and unparseable are told apart."""
    if isinstance(source_type, (T.TimestampType, T.TimestampNTZType)):
        value = source.cast("timestamp")
    elif isinstance(source_type, T.DateType):
        value = source.cast("timestamp")
    else:
        text = _text(source)
        value = F.to_timestamp(text, timestamp_format) if timestamp_format else F.to_timestamp(text)
    reason = (F.when(source.isNull() | (_text(source) == ""), F.lit(f"missing {name}"))
              .when(value.isNull(), F.lit(f"unparseable {name}")))
    return value, reason


#: A number as written in a file: digits, an optional fraction and exponent, a sign. Nothing else
#: (no thousands separators, no "12d" or "0x1p3", which Spark's cast would turn into 12.0 and 8.0).
NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
#: NaN and infinities as Spark's cast reads them: parsed, then rejected by name.
SPECIAL_NUMBER = r"(?i)^[+-]?(nan|inf|infinity)$"
THOUSANDS = r"^[+-]?[0-9]{1,3}([,.' _][0-9]{3})+([.,][0-9]+)?$"


def strict_number(text: Column) -> Column:
    """The double ``text`` (trimmed) spells, or null when it is anything but a plain number."""
    return F.when(text.rlike(NUMBER) | text.rlike(SPECIAL_NUMBER), text.cast("double"))


def parse_amount(source: Column, name: str, source_type: T.DataType = T.StringType()) -> tuple[Column, Column]:
    """(double, reason or null): missing, non-numeric, NaN, infinite and negative values are rejected.

    Text must be a plain number: one with thousands separators ("1,234.50") or stray characters
    is rejected by name rather than read as something else.
    """
    if isinstance(source_type, T.NumericType):
        value = source.cast("double")
        missing = source.isNull()
        odd = F.lit(None).cast("string")
    else:
        text = _text(source)
        value = strict_number(text)
        missing = source.isNull() | (text == "")
        odd = F.when(text.rlike(THOUSANDS), F.lit(f"thousands separator in {name}"))
    reason = (
        F.when(missing, F.lit(f"missing {name}"))
        .when(value.isNull(), F.coalesce(odd, F.lit(f"non-numeric {name}")))
        .when(F.isnan(value), F.lit(f"NaN {name}"))
        .when(value.isin(float("inf"), float("-inf")), F.lit(f"infinite {name}"))
        .when(value < 0, F.lit(f"negative {name}"))
    )
    return value, reason


def parse_label(source: Column, name: str = "label") -> tuple[Column, Column]:
    """(int 0/1 or null, reason or null): an absent label is fine, anything but 0/1 is not."""
    as_double = strict_number(_text(source))
    value = as_double.cast("int")
    present = source.isNotNull() & (_text(source) != "")
    reason = F.when(present & (as_double.isNull() | ~as_double.isin(0.0, 1.0)), F.lit(f"invalid {name}"))
    return F.when(present, value).cast("int"), reason


def _finish(df: DataFrame, parsed: dict[str, tuple[Column, Column]], id_name: str,
            extra: Sequence[str], dedupe: bool = True) -> Validated:
    """Add canonical columns and the reason; mark later duplicates of an id among good rows.

    ``dedupe=False`` leaves the duplicates unmarked and keeps ``_input_order`` instead, for a
    caller that marks them itself (the stream's incremental engine does it on the driver).
    """
    source_columns = tuple(df.columns)
    reasons = [reason for _, reason in parsed.values()]
    if CORRUPT in source_columns:
        # JSON lines Spark could not parse: the raw line is kept in the quarantine.
        reasons.insert(0, F.when(F.col(CORRUPT).isNotNull(), F.lit("unparseable record")))
    staged = df.withColumn("_input_order", F.monotonically_increasing_id()).select(
        F.col("_input_order"),
        *[F.col(f"`{c}`").cast("string").alias(f"_src_{i}") for i, c in enumerate(source_columns)],
        *[value.alias(name) for name, (value, _) in parsed.items()],
        *[F.col(f"`{c}`") for c in extra],
        # concat_ws skips the nulls (no higher-order function: this runs on every input row)
        F.concat_ws("; ", F.array(*reasons)).alias(REASON),
    )
    staged = staged.withColumn(REASON, F.when(F.col(REASON) != "", F.col(REASON)))
    if PRIOR_REASON in source_columns:
        prior = F.col(f"_src_{source_columns.index(PRIOR_REASON)}")
        staged = staged.withColumn(REASON, F.coalesce(prior, F.col(REASON)))
    # The earliest good row keeps an id (first in the input on equal times); later good rows with
    # that id are duplicates. Bad rows do not count, so a garbled copy never pushes out the record.
    if not dedupe:
        return Validated(staged, tuple(parsed), source_columns)
    order = Window.partitionBy(id_name, F.col(REASON).isNull()).orderBy("event_time", "_input_order")
    rank = F.row_number().over(order)
    staged = staged.withColumn(
        REASON, F.when(F.col(REASON).isNull() & (rank > 1), F.lit(f"duplicate {id_name}")).otherwise(F.col(REASON)))
    return Validated(staged.drop("_input_order"), tuple(parsed), source_columns)


def validate_telemetry(raw_df: DataFrame, *, columns: Mapping[str, str], measures: Sequence[str],
                       timestamp_format: str | None = None) -> Validated:
    """Canonical telemetry rows and quarantined ones from a user's frame (any column names)."""
    resolved = _check_columns(raw_df, columns, TELEMETRY_REQUIRED, TELEMETRY_OPTIONAL, measures, dataset="telemetry")
    types = {f.name: f.dataType for f in raw_df.schema.fields}
    col = {name: F.col(f"`{source}`") for name, source in resolved.items()}
    parsed: dict[str, tuple[Column, Column]] = {}
    parsed["device_id"] = parse_id(col["device_id"], "device_id")
    parsed["event_time"] = parse_time(col["event_time"], types[resolved["event_time"]], timestamp_format)
    if "event_id" in col:
        parsed["event_id"] = parse_id(col["event_id"], "event_id")
    else:
        # No id in the input: the same device at the same instant is the same event.
        derived = F.sha2(F.concat_ws("|", _text(col["device_id"]),
                                     F.date_format(parsed["event_time"][0], "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")), 256)
        parsed["event_id"] = (derived, F.lit(None).cast("string"))
    parsed["site_id"] = (_text(col["site_id"]), F.lit(None).cast("string")) if "site_id" in col else (
        F.lit(None).cast("string"), F.lit(None).cast("string"))
    for measure in measures:
        parsed[measure] = parse_amount(F.col(f"`{measure}`"), measure, types[measure])
    parsed["label"] = parse_label(col["label"]) if "label" in col else (
        F.lit(None).cast("int"), F.lit(None).cast("string"))
    used = set(resolved.values()) | set(measures)
    extra = [c for c in raw_df.columns if c not in used and c not in parsed and not c.startswith("_")]
    ordered = {k: parsed[k] for k in ("event_id", "device_id", "site_id", "event_time", *measures, "label")}
    return _finish(raw_df, ordered, "event_id", extra)


def validate_transactions(raw_df: DataFrame, *, columns: Mapping[str, str],
                          timestamp_format: str | None = None, dedupe: bool = True) -> Validated:
    """Canonical transactions and quarantined ones from a user's frame (any column names).

    ``dedupe``: see :func:`_finish`.
    """
    resolved = _check_columns(raw_df, columns, TRANSACTION_REQUIRED, TRANSACTION_OPTIONAL, dataset="transactions")
    types = {f.name: f.dataType for f in raw_df.schema.fields}
    col = {name: F.col(f"`{source}`") for name, source in resolved.items()}
    parsed: dict[str, tuple[Column, Column]] = {
        "transaction_id": parse_id(col["transaction_id"], "transaction_id"),
        "event_time": parse_time(col["event_time"], types[resolved["event_time"]], timestamp_format),
        "customer_id": parse_id(col["customer_id"], "customer_id"),
        "terminal_id": parse_id(col["terminal_id"], "terminal_id"),
        "amount": parse_amount(col["amount"], "amount", types[resolved["amount"]]),
        "label": parse_label(col["label"]) if "label" in col else (
            F.lit(None).cast("int"), F.lit(None).cast("string")),
    }
    used = set(resolved.values())
    extra = [c for c in raw_df.columns if c not in used and c not in parsed and not c.startswith("_")]
    return _finish(raw_df, parsed, "transaction_id", extra, dedupe=dedupe)


def count_outcome(validated: Validated) -> dict[str, int]:
    """Rows in, valid and quarantined in one pass over the data."""
    row = validated.checked.agg(
        F.count(F.lit(1)).alias("rows_in"),
        F.count(F.when(F.col(REASON).isNull(), 1)).alias("valid"),
        F.count(F.col(REASON)).alias("quarantined"),
    ).first()
    return {"rows_in": row["rows_in"], "valid": row["valid"], "quarantined": row["quarantined"]}
