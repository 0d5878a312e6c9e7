"""``benchmarks/selection_audit.py`` keeps older studies' gate verdicts on a fresh checkout:
from the previous audit's rows, only where they describe the same test year."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "selection_audit.py"


def _audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("selection_audit", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _study(folder: Path, years: dict[str, dict[str, Any]]) -> None:
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({"years": years}))


def _year(excess: float, edge: dict[str, Any] | None = None) -> dict[str, Any]:
    model = {"excess_daily_pct": excess, "sharpe": 0.5, "total_return_pct": 1.0,
             "n_trades": 10, "fees_paid": 20.0}  # fmt: skip
    return {"pipeline": {"edge": edge} if edge else {}, "venues": {"binance": {"model": model}}}


def test_verdicts_come_from_the_study_else_from_a_matching_earlier_row(tmp_path: Path) -> None:
    audit = _audit()
    edge = {"found": False, "p": 0.4, "sharpe": 2.0, "excess_daily_return": {"mean_pct": 0.01}}
    _study(tmp_path / "new", {"2021": _year(0.02, edge)})
    _study(tmp_path / "old", {"2021": _year(0.03), "2022": _year(-0.01), "2023": _year(0.05)})
    gate = {"gate_found": True, "gate_p": 0.01, "val_excess_daily_pct": 0.2, "val_sharpe": 7.0}
    earlier = {("old", "2021"): {"test_excess_daily_pct": 0.03, "test_return_pct": 1.0,
                                 "test_trades": 10, **gate},
               ("old", "2022"): {"test_excess_daily_pct": -0.02, "test_return_pct": 1.0,
                                 "test_trades": 10, **gate}}  # fmt: skip
    frame = audit.year_models(tmp_path, earlier)
    got = {(r["study"], r["year"]): r for r in frame.to_dict(orient="records")}
    # 2022's earlier row has other test figures (another run), 2023 has none: both dropped
    assert sorted(got) == [("new", "2021"), ("old", "2021")]
    assert got["new", "2021"]["gate_source"] == "study files"
    assert got["new", "2021"]["gate_p"] == 0.4 and got["new", "2021"]["val_sharpe"] == 2.0
    assert got["old", "2021"]["gate_source"] == "earlier audit"
    assert {k: got["old", "2021"][k] for k in gate} == gate
    assert got["old", "2021"]["test_fees_pct"] == 0.2
    assert len(audit.year_models(tmp_path)) == 1  # without an earlier audit: the study's only
