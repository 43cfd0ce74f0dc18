"""Bring your own file: every row of a hostile CSV is either valid with its exact source values or
quarantined with the reason that names its problem; unusable inputs fail naming the file (exit 2).

Runs the features job in this process on the session's Spark (no new JVM).
"""
import pytest

pytestmark = pytest.mark.integration

HEADER = b"transaction_id,event_time,customer_id,terminal_id,amount\n"
# (line, expected reason or None for a valid row); no label column, as in the review
ROWS = [
    (b"007,2026-03-01 10:00:00,0042,t1,12.50", None),
    (b"1e3,2026-03-01 10:01:00,c1,00,1e3", None),
    ("id\ufffd1,2026-03-01 10:02:00,c1,t1,3.0".encode(), None),  # a real U+FFFD is valid UTF-8
    (b"t2,2026-03-01 10:03:00,c1,t1,1,234.50", "too many fields (the header has 5)"),
    (b't3,2026-03-01 10:04:00,c1,t1,"1,234.50"', "thousands separator in amount"),
    (b"t4,2026-03-01 10:05:00,c1,t1,12.5,x,y", "too many fields (the header has 5)"),
    (b"t5,2026-03-01 10:06:00,c1", "too few fields (the header has 5)"),
    (b"t6,2026-03-01 10:07:00,c1,t1,12d", "non-numeric amount"),
    (b"t7,2026-03-01 10:08:00,c1,t1,0x1p3", "non-numeric amount"),
    (b"t8,2026-03-01 10:09:00,c1,t1,$5", "non-numeric amount"),
    (b"id\xff1,2026-03-01 10:10:00,c1,t1,3.0", "undecodable bytes (not valid UTF-8)"),
    (b"id\xfe1,2026-03-01 10:11:00,c1,t1,3.0", "undecodable bytes (not valid UTF-8)"),
]


def run_features(tmp_path, source, *extra, quarantine="quarantine"):
    from jobs.build_features import main

    return main(["--conf", "conf/local.yaml", "--dataset", "transactions", "--input", str(source),
                 "--output", str(tmp_path / "features"), "--quarantine", str(tmp_path / quarantine),
                 "--set", f"storage.lake={tmp_path / 'lake'}", "--set", "schema.transactions.columns.label=",
                 "--set", "features.transactions.windows_days=[1]",  # fewer aggregates: a quicker test
                 *extra])


def test_hostile_csv_rows_are_valid_with_their_exact_values_or_quarantined_with_their_reason(
        spark, tmp_path, capsys):
    source = tmp_path / "events.csv"   # no schema.*.format: the extension says CSV
    source.write_bytes(HEADER + b"\n".join(line for line, _ in ROWS) + b"\n\n")
    assert run_features(tmp_path, source) == 0
    out = capsys.readouterr().out
    assert "rows in 12 = valid 3 + quarantined 9" in out

    features = spark.read.format("delta").load(str(tmp_path / "features"))
    got = {(r.transaction_id, r.customer_id, r.terminal_id, r.amount)
           for r in features.select("transaction_id", "customer_id", "terminal_id", "amount").collect()}
    assert got == {("007", "0042", "t1", 12.5), ("1e3", "c1", "00", 1000.0), ("id\ufffd1", "c1", "t1", 3.0)}

    q = spark.read.format("delta").load(str(tmp_path / "quarantine")).toPandas()
    assert sorted(q["reason"]) == sorted(reason for _, reason in ROWS if reason)
    by_reason = q.groupby("reason")["transaction_id"].apply(sorted).to_dict()
    assert by_reason["too few fields (the header has 5)"] == ["t5"]
    assert by_reason["thousands separator in amount"] == ["t3"]
    assert {f.split(":", 1)[1].lstrip("/") for f in q["_source_file"]} == {str(source).lstrip("/")}
    # the undecodable lines are kept as read, never merged into one id
    assert len(q[q["reason"].str.startswith("undecodable")]["_corrupt_record"].unique()) == 2

    # a clean copy of the same day under another name: the re-run replaces that date's rejects
    clean = tmp_path / "events_fixed.csv"
    clean.write_bytes(HEADER + b"\n".join(line for line, reason in ROWS if reason is None) + b"\n")
    assert run_features(tmp_path, clean) == 0
    assert "rows in 3 = valid 3 + quarantined 0" in capsys.readouterr().out
    assert spark.read.format("delta").load(str(tmp_path / "quarantine")).count() == 0


def test_inputs_that_cannot_be_used_fail_naming_the_file(spark, tmp_path, capsys):
    header_only = tmp_path / "header_only.csv"
    header_only.write_bytes(HEADER)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    for path, what in ((header_only, "has no rows: a header only"), (empty, "is empty: no header line")):
        assert run_features(tmp_path, path) == 2
        assert f"{path} {what}" in capsys.readouterr().err

    no_terminal = tmp_path / "no_terminal.csv"
    no_terminal.write_bytes(b"transaction_id,event_time,customer_id,amount\nx,2026-03-01 10:00:00,c,1.0\n")
    assert run_features(tmp_path, no_terminal) == 2
    assert "--set schema.transactions.columns.terminal_id=<your column>" in capsys.readouterr().err

    # a folder of Parquet files whose second file is corrupt: named before anything is read
    folder = tmp_path / "parquet_in"
    rows = [("a", "2026-03-01 10:00:00", "c", "t", 1.0)]
    frame = spark.createDataFrame(rows, "transaction_id string, event_time string, customer_id string, "
                                        "terminal_id string, amount double")
    frame.coalesce(1).write.parquet(str(folder))
    good = next(folder.glob("part-*.parquet"))
    bad = folder / "part-99999-corrupt.parquet"
    bad.write_bytes(good.read_bytes()[:40] + b"\x00" * 64 + b"PAR1")
    assert run_features(tmp_path, folder, "--set", "schema.transactions.format=parquet") == 2
    err = capsys.readouterr().err
    assert "part-99999-corrupt.parquet" in err and "Traceback" not in err


def test_json_lines_that_cannot_be_read_exactly_carry_their_problem(spark, tmp_path):
    from runtime.storage import CORRUPT, PROBLEM, read_strict

    source = tmp_path / "events.jsonl"
    source.write_bytes(b'{"id": "007", "amount": 1.5}\n'
                       b'{"id": "a", "amount": 2}\n'
                       b'{"id": "b", "amount": {"x": 1}}\n'
                       b'{"id": "c", "amount": \n'
                       b'{"id": "d\xff", "amount": 3}\n')
    rows = {r["id"] if r[CORRUPT] is None else r[CORRUPT]: r[PROBLEM] for r in read_strict(spark, str(source), "json").collect()}
    # an object among numbers makes Spark infer text for amount: "b" is read, the validator rejects it
    assert rows == {"007": None, "a": None, "b": None,
                    '{"id": "c", "amount": ': "unparseable JSON record (not a JSON object with the types of the "
                                             "other lines)",
                    '{"id": "d\ufffd", "amount": 3}': "undecodable bytes (not valid UTF-8)"}
