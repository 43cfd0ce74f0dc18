"""The one scoring function behind the HTTP app and the AWS Lambda handler: request body in,
status and JSON answer out.

A request body is one event (a JSON object) or a list of them, each the data set's canonical JSON
record (the stream's records: ``schema.<dataset>.columns`` names its fields). The steps:

1. parse (bad JSON, a body that is neither an object nor a list, no events, more than
   ``serve.max_events``: 400 with the reason);
2. judge each record as the stream does: clean records are decoded by the stream's fast path
   (ingest/fastdecode.py); every other record goes through the stream's Spark decoder and the
   batch validator (ingest/decode.py ``decode_records`` with the data set's
   ``ingest.validation`` rules), so its reason is the one a dead letter or the quarantine gets
   (``bad JSON``, ``missing customer_id``, ``negative amount``, ``wrong type amount (expected a
   number)``, ...). Fields the record schema does not know are refused here (``unknown field
   x``; the stream ignores them, an API caller wants to hear about a typo). Then the stream's
   checks against what was seen: ``duplicate transaction_id`` (twice in the request),
   ``duplicate transaction_id (already processed)`` (in the history), ``late (...)`` (before the
   history is complete, so its features could not equal the batch job's). One bad record
   refuses the request: 400 with every record's reason, nothing scored or remembered;
3. features from the per-entity history (serving/history.py), the same numbers the batch
   feature job gives;
4. scores through the scoring core (scoring/plan.py ``score_batch``, which scoring/local.py's
   ``score_pandas`` also runs) with the current champions (serving/models.py).
"""
from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import orjson
import pandas as pd

from features.datasets import dataset as dataset_named
from features.incremental import STATE_COLUMNS
from ingest.fastdecode import _NAT, _epoch_micros, clean_fields, clean_text, decode_clean_transactions
from scoring.plan import Columns, Scored, ScoringPlan, check_columns, score_batch, scoring_options
from scoring.risk import logistic_risk_array, rcf_risk_array

#: The reason a record the fast decoder leaves over gets where no Spark decoder is at hand (Lambda).
_DTYPES = {"transaction_id": object, "ts": np.int64, "customer_id": object, "terminal_id": object,
           "amount": np.float64, "label": np.float64}
NO_SPARK_REASON = ("not in the strict form decoded without Spark (see README, Scoring API): "
                   "the stream's validator gives the exact reason")


@dataclass
class Reply:
    """An HTTP answer: status and a JSON-able body."""

    status: int
    body: Any
    headers: dict = field(default_factory=dict)

    def json(self) -> bytes:
        return orjson.dumps(self.body, option=orjson.OPT_SERIALIZE_NUMPY)


def refusal(status: int, error: str, rejected: Sequence[Mapping] = ()) -> Reply:
    body = {"error": error}
    if rejected:
        body["rejected"] = list(rejected)
    return Reply(status, body)


# --------------------------------------------------------------------------- the Spark judge


class SparkJudge:
    """Judges records with the stream's Spark decoder (ingest/decode.py ``decode_records`` and the
    data set's batch validator): ``judge(payloads)`` -> per payload ``(reason, state row)``, the
    reason None and the row a dict of :data:`features.incremental.STATE_COLUMNS` for a good one.

    The session is the active one, or one started with the config's settings on first need.
    """

    def __init__(self, config: Mapping, session: Optional[Callable[[], Any]] = None):
        self.config = config
        self._session = session

    def session(self):
        if self._session is None:
            from pyspark.sql import SparkSession

            active = SparkSession.getActiveSession()
            if active is None:
                from runtime.spark import build_session

                active = build_session(self.config)
            self._session = lambda: active
        return self._session()

    def __call__(self, payloads: Sequence[str]) -> list[tuple[Optional[str], Optional[dict]]]:
        from pyspark.sql import functions as F

        from features.incremental import TransactionStreamFeatures
        from ingest.decode import PAYLOAD_COLUMNS, RecordSchema, decode_records
        from ingest.validation import REASON

        spark = self.session()
        described = dataset_named(self.config["dataset"])
        schema_conf = self.config["schema"][described.name]
        fields, numeric = described.record_fields(schema_conf)
        pdf = pd.DataFrame({"payload": pd.Series(list(payloads), dtype=object),
                            "payload_bytes": [len(p.encode("utf-8")) for p in payloads],
                            "record_source": [str(i) for i in range(len(payloads))]})
        df = (spark.createDataFrame(pdf, "payload string, payload_bytes int, record_source string")
              .withColumn("arrival_time", F.current_timestamp()).select(*PAYLOAD_COLUMNS))
        decoded = decode_records(df, schema=RecordSchema(fields, numeric, described.event_id),
                                 validate=lambda records: described.validate(records, schema_conf, dedupe=False),
                                 max_record_bytes=int(self.config["stream"]["max_record_bytes"]))
        rows = decoded.records.select(F.col("record_source").cast("int").alias("_i"), F.col(REASON),
                                      *TransactionStreamFeatures.to_state_columns()).toPandas()
        out: list[tuple[Optional[str], Optional[dict]]] = [(None, None)] * len(payloads)
        for row in rows.to_dict("records"):
            reason = row.pop(REASON)
            i = int(row.pop("_i"))
            if isinstance(reason, str):
                out[i] = (reason, None)
            else:
                row["label"] = np.nan if row["label"] is None or row["label"] != row["label"] else float(row["label"])
                out[i] = (None, row)
        return out


def no_spark_judge(payloads: Sequence[str]) -> list[tuple[Optional[str], Optional[dict]]]:
    return [(NO_SPARK_REASON, None) for _ in payloads]


# --------------------------------------------------------------------------- one request's clean records


def clean_events(records: Sequence, payloads: Sequence[str], names: Mapping[str, str],
                 max_record_bytes: int) -> Optional[dict[str, np.ndarray]]:
    """The state columns of ``records`` (already parsed; ``payloads`` their JSON text) when *every*
    one is clean in ingest/fastdecode.py's sense, else None (then the request goes through
    ``decode_clean_transactions`` itself, which sorts clean from left over).

    The rule is ingest/fastdecode.py's (``clean_text``, ``clean_fields``), applied to the parsed
    records without ``decode_clean_transactions``' pandas frame (about half the CPU of a one-event
    request); tests/unit/test_serving_fastpath.py checks the two agree on clean and tricky records.
    """
    keys = tuple(names[k] for k in ("transaction_id", "customer_id", "terminal_id", "event_time", "amount", "label"))
    ids, customers, terminals, times, amounts, labels = [], [], [], [], [], []
    for record, text in zip(records, payloads, strict=True):
        values = clean_fields(record, keys) if clean_text(text, max_record_bytes) else None
        if values is None:
            return None
        for column, value in zip((ids, customers, terminals, times, amounts, labels), values, strict=True):
            column.append(value)
    ts = _epoch_micros(times)
    if (ts == _NAT).any():
        return None
    n = len(ids)
    out = {"transaction_id": np.empty(n, object), "ts": ts, "customer_id": np.empty(n, object),
           "terminal_id": np.empty(n, object), "amount": np.array(amounts, np.float64),
           "label": np.array(labels, np.float64)}
    out["transaction_id"][:] = ids
    out["customer_id"][:] = customers
    out["terminal_id"][:] = terminals
    return out


# --------------------------------------------------------------------------- the service


def _iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(us))).isoformat() + "Z"


def _num(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class ScoringService:
    """Scores request bodies (module docstring); the HTTP app and the Lambda handler call it.

    ``config``: the whole config (its ``dataset``, ``schema``, ``stream.max_record_bytes``,
    ``scoring`` and ``serve`` sections). ``champions``: a source with ``current()``
    (serving/models.py). ``history``: the per-entity history (serving/history.py). ``judge``:
    how records the fast decoder leaves over are judged (:class:`SparkJudge`, or
    :func:`no_spark_judge`).
    """

    def __init__(self, config: Mapping, champions, history, judge: Callable = no_spark_judge):
        described = dataset_named(config["dataset"])
        if not described.incremental:
            raise ValueError(f"the scoring API computes single-event features for data sets with a per-entity "
                             f"incremental twin of the batch features; {described.name} has none yet")
        self.dataset = described
        self.schema_conf = config["schema"][described.name]
        fields, _ = described.record_fields(self.schema_conf)
        self.fields = frozenset(fields)
        columns = self.schema_conf["columns"]
        self._names = {k: columns.get(k) or "" for k in ("transaction_id", "customer_id", "terminal_id",
                                                          "event_time", "amount", "label")}
        # clean_events needs the fields fastdecode needs; with a custom timestamp format nothing is clean
        self._fast = (not self.schema_conf.get("timestamp_format")
                      and all(self._names[k] for k in self._names if k != "label"))
        self.max_record_bytes = int(config["stream"]["max_record_bytes"])
        self.options = scoring_options(config["scoring"])
        serve = config["serve"]
        self.max_events = int(serve["max_events"])
        self.max_body_bytes = int(serve["max_body_bytes"])
        self.learn = bool(serve["learn"])
        self.champions, self.history, self.judge = champions, history, judge
        self.id_column = described.event_id
        self.scored = self.requests = 0
        self.cpu_seconds = 0.0
        self._plan: Optional[tuple] = None

    # -- the endpoints' bodies ---------------------------------------------------------------
    def models(self) -> Reply:
        champions = self.champions.current()
        info = {}
        for kind in ("rcf", "logistic"):
            model = getattr(champions, kind)
            if model is not None:
                info[kind] = {"version": getattr(champions, f"{kind}_version"), "threshold": float(model.threshold)}
        return Reply(200, {"dataset": self.dataset.name, "models": info, "feature_columns": champions.feature_cols,
                           "reloads": self.champions.reloads, "options": self.options})

    def health(self) -> Reply:
        champions = self.champions.current()
        newest = self.history.newest_us
        body = {"status": "ok", "dataset": self.dataset.name,
                "model_versions": {"rcf": champions.rcf_version, "logistic": champions.logistic_version},
                "history_rows": len(self.history), "history_newest": _iso(newest) if newest is not None else None,
                "scored": self.scored, "requests": self.requests,
                "cpu_ms_per_request": round(1000 * self.cpu_seconds / self.requests, 4) if self.requests else None}
        if self.champions.last_error:
            body["warning"] = self.champions.last_error
        return Reply(200, body)

    def score(self, body: bytes) -> Reply:
        """Score a request body (module docstring); never raises for what a client sends.

        The thread CPU time it took is added up (``/health``: ``cpu_ms_per_request``): on a shared
        machine it says what one request costs when wall-clock latency says more about the neighbours.
        """
        started = time.thread_time()
        try:
            return self._score(body)
        finally:
            self.requests += 1
            self.cpu_seconds += time.thread_time() - started

    def _score(self, body: bytes) -> Reply:
        if len(body) > self.max_body_bytes:
            return refusal(413, f"body too large ({len(body)} bytes > {self.max_body_bytes})")
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return refusal(400, "bad JSON", [{"index": None, "reason": "bad JSON"}])
        records = [parsed] if isinstance(parsed, dict) else parsed
        if not isinstance(records, list):
            return refusal(400, "expected one event (a JSON object) or a list of events")
        if not records:
            return refusal(400, "no events")
        if len(records) > self.max_events:
            return refusal(400, f"too many events ({len(records)} > {self.max_events} per request)")
        events, rejected = self.decode(records)
        if rejected:
            return refusal(400, f"{len(rejected)} of {len(records)} event(s) rejected", rejected)
        return Reply(200, self.score_events(events))

    # -- steps -------------------------------------------------------------------------------
    def decode(self, records: list) -> tuple[dict[str, np.ndarray], list[dict]]:
        """(the good records' state columns as arrays, in request order; the rejected records'
        index and reason): the request is scored only when the second is empty.
        """
        reasons: list[Optional[str]] = [None] * len(records)
        for i, record in enumerate(records):
            if isinstance(record, dict):
                unknown = sorted(k for k in record if k not in self.fields)
                if unknown:
                    reasons[i] = f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
        payloads = [orjson.dumps(r).decode("utf-8") for r in records]
        events = None
        if self._fast and not any(reasons):
            events = clean_events(records, payloads, self._names, self.max_record_bytes)
        if events is not None:
            return events, self._seen_checks(events, reasons, list(range(len(records))))
        clean_rows, clean = decode_clean_transactions(payloads, schema_conf=self.schema_conf,
                                                      max_record_bytes=self.max_record_bytes)
        values = {c: clean_rows[c].to_numpy() for c in STATE_COLUMNS}
        where = {int(i): k for k, i in enumerate(np.flatnonzero(clean))}
        judged: dict[int, dict] = {}
        left = [i for i in range(len(records)) if not clean[i] and reasons[i] is None]
        if left:
            for i, (reason, row) in zip(left, self.judge([payloads[i] for i in left]), strict=True):
                reasons[i] = reason
                if row is not None:
                    judged[i] = row
        good = [i for i in range(len(records)) if reasons[i] is None]
        events = {c: np.array([values[c][where[i]] if i in where else judged[i][c] for i in good], dtype=_DTYPES[c])
                  for c in STATE_COLUMNS}
        return events, self._seen_checks(events, reasons, good)

    def _seen_checks(self, events: Mapping[str, np.ndarray], reasons: list, good: list[int]) -> list[dict]:
        """The stream's checks against what was seen (duplicates in the request or the history, late
        events) on the good records' ``events``; the rejected records' index and reason.
        """
        if good:
            ids = events[self.id_column].tolist()
            seen: set = set()
            # the earliest event of an id keeps it (first in the request on equal times), as in the stream
            order = [0] if len(good) == 1 else np.lexsort((np.arange(len(good)), events["ts"]))
            for k in order:
                if ids[k] in seen:
                    reasons[good[k]] = f"duplicate {self.id_column}"
                seen.add(ids[k])
            known = self.history.known(ids)
            complete = self.history.complete_from_us
            ts = events["ts"].tolist()
            for k, i in enumerate(good):
                if reasons[i] is not None:
                    continue
                if known[k]:
                    reasons[i] = f"duplicate {self.id_column} (already processed)"
                elif complete is not None and ts[k] < complete:
                    reasons[i] = f"late (event_time before the watermark {_iso(complete)[:-1]})"
        return [{"index": i, "reason": r} for i, r in enumerate(reasons) if r is not None]

    def plan(self, champions) -> tuple[ScoringPlan, Any]:
        """(the scoring plan, the RCF forest or None) of ``champions``, made once per champions set."""
        if self._plan is None or self._plan[0] is not champions:
            plan = ScoringPlan.of(champions, **self.options)
            forest = champions.rcf.forest if champions.rcf is not None else None
            self._plan = (champions, plan, forest)
        return self._plan[1], self._plan[2]

    def score_events(self, events: Mapping[str, np.ndarray]) -> dict:
        """Features from the history, then the scoring core (scoring/plan.py ``score_batch``, as
        scoring/local.py runs it on a frame); the answer's body. ``events``: state columns as arrays.
        """
        champions = self.champions.current()
        plan, forest = self.plan(champions)
        columns = dict(self.history.features(events))
        columns.update(events)
        check_columns(list(columns), plan.inputs)
        n = len(events["ts"])
        scored = score_batch(plan, forest, Columns(columns.__getitem__, n))
        if self.learn:
            self.history.add(events)
        self.scored += n
        return {"results": self.results(columns, scored, champions, plan), "dataset": self.dataset.name}

    def results(self, columns: Mapping[str, np.ndarray], scored: Scored, champions, plan: ScoringPlan) -> list[dict]:
        detectors = {name[: -len("_score")]: value for name, value in scored._asdict().items()
                     if name.endswith("_score") and value is not None}
        versions = {d: getattr(champions, f"{d}_version", None) for d in detectors}
        components = {}
        if scored.rcf_score is not None:
            components["rcf"] = rcf_risk_array(scored.rcf_score, plan.rcf_threshold)
        if scored.logistic_score is not None:
            components["logistic"] = logistic_risk_array(scored.logistic_score, plan.logistic_threshold)
        names = list(champions.feature_cols)
        ids, ts = columns[self.id_column], columns["ts"]
        out = []
        for k in range(len(ids)):
            out.append({
                self.id_column: ids[k],
                "event_time": _iso(ts[k]),
                "risk": _num(scored.risk[k]),
                "is_anomaly": bool(scored.is_anomaly[k]),
                "reasons": list(scored.reasons[k]),
                "scores": {d: _num(v[k]) for d, v in detectors.items()},
                "risk_components": {d: _num(v[k]) for d, v in components.items()},
                "model_versions": versions,
                "features": {c: _num(columns[c][k]) for c in names},
            })
        return out

    def sample_event(self) -> dict:
        """A plausible new event for the demo form: a known customer and terminal, one minute after
        the newest event seen, a large amount (so the models have something to say).
        """
        frame = self.history.frame()
        if not len(frame):
            return {"transaction_id": "demo-1", "event_time": "2024-01-01T12:00:00Z", "customer_id": "c1",
                    "terminal_id": "t1", "amount": 120.0}
        last = frame.iloc[int(np.argmax(frame["ts"].to_numpy()))]
        customer = frame[frame["customer_id"] == last["customer_id"]]
        amount = round(float(customer["amount"].max()) * 3 + 100.0, 2)
        when = _iso(int(last["ts"]) + 60_000_000)
        return {"transaction_id": f"demo-{self.scored + 1}-{int(last['ts']) % 100000}",
                "event_time": when[:19] + "Z", "customer_id": str(last["customer_id"]),
                "terminal_id": str(last["terminal_id"]), "amount": amount}
