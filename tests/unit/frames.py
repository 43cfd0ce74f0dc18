"""Frame comparison for tests (pyspark.testing cannot be imported next to pandas 3)."""
import pytest


def assert_same_rows(actual_df, expected_df, key="event_id", rel=1e-9):
    """Same columns and the same rows by ``key``, floats within ``rel``, with the first difference shown.

    (pyspark.testing.assertDataFrameEqual cannot be imported next to pandas 3: pyspark.testing
    imports pyspark.pandas.)
    """
    assert actual_df.columns == expected_df.columns
    actual_rows, expected_rows = actual_df.collect(), expected_df.collect()
    actual = {row[key]: row.asDict() for row in actual_rows}
    expected = {row[key]: row.asDict() for row in expected_rows}
    assert len(actual) == len(actual_rows) == len(expected_rows) and actual.keys() == expected.keys()
    for k, row in expected.items():
        for column, value in row.items():
            got = actual[k][column]
            if isinstance(value, float):
                assert got == pytest.approx(value, rel=rel, abs=1e-12), (k, column, got, value)
            else:
                assert got == value, (k, column, got, value)
