"""`train --model som`: the self-organising map trained by the job on the shared small lake."""
import contextlib
import io
import json

from models import registry
from models.som import SelfOrganizingMapModel


def test_train_model_som_registers_a_map_on_the_aggregate_features(lake, tmp_path):
    from jobs import train

    models = tmp_path / "models"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = train.main(lake["args"] + ["--model", "som", "--output", str(models), "--json",
                                          "--set", "train.som.grid_rows=4", "--set", "train.som.grid_cols=4",
                                          "--set", "train.som.epochs=10"])
    assert code == 0, out.getvalue()[-3000:]
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["status"] in ("done", "challenger") and "som" in summary["versions"]
    root = str(models / "transactions")
    info = registry.version_info(root, "som", summary["versions"]["som"])
    cols = info["params"]["feature_cols"]
    assert cols[0] == "log_amount" and all(c.startswith(("customer_", "terminal_", "amount_", "log_")) for c in cols)
    assert info["params"]["grid_rows"] == 4 and info["params"]["threshold_quantile"] == 0.95
    assert 0.0 <= info["metrics"]["auc_roc"] <= 1.0
    model, _ = registry.load_version(root, "som", info["version"], loader=SelfOrganizingMapModel.load)
    assert model.threshold == info["params"]["threshold"] and model.grid.units.shape == (16, len(cols))
