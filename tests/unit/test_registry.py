"""Registry: versions, champion moves only when not worse, loading, Hadoop-FS (URI) roots."""
import json
from pathlib import Path

import pytest

from models import registry
from runtime import fs


class FakeModel:
    def __init__(self, value):
        self.value = value

    def save(self, path):
        Path(path).mkdir(parents=True)
        Path(path, "value.txt").write_text(str(self.value))

    @classmethod
    def load(cls, path):
        return cls(float(Path(path, "value.txt").read_text()))


def _register(root, value, ap, **kw):
    return registry.register(str(root), "fake", FakeModel(value), metrics={"average_precision": ap, "auc_roc": 0.9},
                             params={"reg_param": value}, data_window={"train_from": "2018-07-25"}, **kw)


def test_first_version_becomes_champion(tmp_path):
    assert registry.champion(str(tmp_path), "fake") is None
    info = _register(tmp_path, 1.0, 0.60)
    assert info["version"] == "v0001" and info["promoted"] and info["previous_champion"] is None
    champ = registry.champion(str(tmp_path), "fake")
    assert champ["version"] == "v0001" and champ["metrics"]["average_precision"] == 0.60
    stored = json.loads((tmp_path / "fake" / "v0001" / "version.json").read_text())
    assert stored["params"] == {"reg_param": 1.0} and stored["kind"] == "fake" and stored["created"]


def test_worse_version_does_not_move_champion_but_is_kept(tmp_path):
    _register(tmp_path, 1.0, 0.60)
    info = _register(tmp_path, 2.0, 0.55, tolerance=0.01)
    assert info["version"] == "v0002" and not info["promoted"]
    assert registry.champion(str(tmp_path), "fake")["version"] == "v0001"
    assert [v["version"] for v in registry.versions(str(tmp_path), "fake")] == ["v0001", "v0002"]


def test_not_worse_within_tolerance_moves_champion(tmp_path):
    _register(tmp_path, 1.0, 0.60)
    info = _register(tmp_path, 3.0, 0.595, tolerance=0.01)
    assert info["promoted"] and info["previous_champion"] == "v0001"
    assert registry.champion(str(tmp_path), "fake")["version"] == "v0002"
    # lower-is-better metrics compare the other way
    info = _register(tmp_path, 4.0, 0.70, higher_is_better=False)
    assert not info["promoted"]


def test_load_version_champion_and_explicit(tmp_path):
    _register(tmp_path, 1.0, 0.60)
    _register(tmp_path, 2.0, 0.50)
    model, info = registry.load_version(str(tmp_path), "fake", loader=FakeModel.load)
    assert (model.value, info["version"]) == (1.0, "v0001")
    model, info = registry.load_version(str(tmp_path), "fake", "v0002", loader=FakeModel.load)
    assert model.value == 2.0
    with pytest.raises(registry.RegistryError):
        registry.load_version(str(tmp_path), "fake", "v0009", loader=FakeModel.load)
    with pytest.raises(registry.RegistryError):
        registry.load_version(str(tmp_path), "nothing", loader=FakeModel.load)


def test_unfinished_version_folder_is_ignored(tmp_path):
    _register(tmp_path, 1.0, 0.60)
    (tmp_path / "fake" / "v0002" / "model").mkdir(parents=True)  # crashed before version.json
    assert [v["version"] for v in registry.versions(str(tmp_path), "fake")] == ["v0001"]
    assert _register(tmp_path, 1.0, 0.61)["version"] == "v0003"


def test_missing_metric_is_an_error(tmp_path):
    with pytest.raises(registry.RegistryError, match="average_precision"):
        registry.register(str(tmp_path), "fake", FakeModel(1), metrics={"auc_roc": 0.9})


def test_uri_root_goes_through_hadoop_filesystem(spark, tmp_path):
    root = f"file://{tmp_path}/reg"

    def save(model, path):  # a path URI: write through the Hadoop helpers like a Spark model would
        fs.write_text(fs.join(path, "value.txt"), str(model.value))

    def load(path):
        return FakeModel(float(fs.read_text(fs.join(path, "value.txt"))))

    registry.register(root, "fake", FakeModel(5.0), metrics={"average_precision": 0.5}, save=save)
    registry.register(root, "fake", FakeModel(6.0), metrics={"average_precision": 0.4}, save=save)
    assert [v["version"] for v in registry.versions(root, "fake")] == ["v0001", "v0002"]
    model, info = registry.load_version(root, "fake", loader=load)
    assert model.value == 5.0 and info["version"] == "v0001"
    assert (tmp_path / "reg" / "fake" / "champion.json").exists()


def test_gate_failure_registers_a_challenger_with_its_reasons(tmp_path):
    _register(tmp_path, 1.0, 0.60)
    info = _register(tmp_path, 2.0, 0.90, gate_failures=["validation recall 0.010 at threshold < 0.2"],
                     gate_metrics={"recall": 0.01})
    assert not info["promoted"] and info["decision"] == "challenger"
    assert registry.champion(str(tmp_path), "fake")["version"] == "v0001"
    stored = json.loads((tmp_path / "fake" / "v0002" / "version.json").read_text())
    assert stored["decision"] == "challenger" and stored["reasons"] == ["validation recall 0.010 at threshold < 0.2"]
    assert stored["gate_metrics"] == {"recall": 0.01}
    worse = _register(tmp_path, 3.0, 0.40, tolerance=0.01)
    assert worse["reasons"] == ["average_precision 0.4000 is worse than champion v0001's 0.6000 by more than 0.01"]


def test_manual_promotion_moves_the_champion_and_records_it(tmp_path):
    _register(tmp_path, 1.0, 0.60)
    _register(tmp_path, 2.0, 0.50)
    pointer = registry.promote(str(tmp_path), "fake", "v0002", user="ana", reason="checked by hand")
    assert registry.champion(str(tmp_path), "fake")["version"] == "v0002"
    assert (pointer["previous"], pointer["promoted_by"], pointer["user"], pointer["reason"]) == \
        ("v0001", "manual", "ana", "checked by hand")
    with pytest.raises(registry.RegistryError, match="v0009"):
        registry.promote(str(tmp_path), "fake", "v0009")
    rows = registry.listing(str(tmp_path))
    assert [(r["version"], r["champion"], r["decision"]) for r in rows] == \
        [("v0001", False, "promoted"), ("v0002", True, "challenger")]
    assert rows[1]["promoted_by"] == "manual" and registry.kinds(str(tmp_path)) == ["fake"]


def _snap(version, table_id="t-features"):
    return {"location": "file:/lake/features/x", "version": version, "timestamp": f"2026-01-0{version + 1}T00:00:00.000+00:00",
            "table_id": table_id, "path": "/lake/features/x"}


def test_a_version_records_the_table_snapshots_it_was_trained_on_and_the_listing_shows_them(tmp_path):
    from reporting.registry import listing_lines

    snaps = {"features": _snap(3), "labels": _snap(1, "t-labels")}
    info = _register(tmp_path, 1.0, 0.60, snapshots=snaps)
    stored = json.loads((tmp_path / "fake" / "v0001" / "version.json").read_text())
    assert stored["snapshots"] == snaps and info["snapshots"] == snaps
    rows = registry.listing(str(tmp_path))
    assert rows[0]["snapshots"] == snaps
    text = "\n".join(listing_lines(rows))
    assert "trained on features v3 (2026-01-04T00:00:00.000+00:00), labels v1 (2026-01-02T00:00:00.000+00:00)" in text


def test_snapshots_in_use_lists_every_version_or_only_the_champions(tmp_path):
    _register(tmp_path, 1.0, 0.60, snapshots={"features": _snap(1)})
    _register(tmp_path, 2.0, 0.50, snapshots={"features": _snap(2)})          # a challenger
    _register(tmp_path, 3.0, 0.70)                                            # recorded no snapshot
    _register(tmp_path, 4.0, 0.80, snapshots={"features": _snap(4)})          # the champion
    every = registry.snapshots_in_use(str(tmp_path), "all")
    assert [(kind, version, snaps["features"]["version"]) for kind, version, snaps in every] == \
        [("fake", "v0001", 1), ("fake", "v0002", 2), ("fake", "v0004", 4)]
    champions = registry.snapshots_in_use(str(tmp_path), "champions")
    assert [(version, snaps["features"]["version"]) for _, version, snaps in champions] == [("v0004", 4)]
    with pytest.raises(registry.RegistryError, match="keep must be"):
        registry.snapshots_in_use(str(tmp_path), "newest")
