"""pipeline.selection lcb: the final model by the highest lower bound of its daily excess return.

The choice is recomputed here from the saved candidates with the edge module's own figures, so a
wrong candidate, window, seed or tie rule in the pipeline shows up as a mismatch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nexlify.agent.ensemble import load_policy
from nexlify.cli import build_parser
from nexlify.commands.options import overrides_from_args
from nexlify.data.market_data import MarketData
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError, TrainingError
from nexlify.evaluation.edge import excess_daily_return
from nexlify.market.evaluate import greedy_run
from nexlify.pipeline.auto_retrain import run_pipeline, validation_folds
from nexlify.pipeline.run_files import result_config
from nexlify.pipeline.selection import choose_by_lower_bound, highest_lower_bound
from nexlify.train.config import PipelineConfig, RunConfig, run_config_from_dict
from tests.test_pipeline import TINY  # the same few-second synthetic pipeline


def tiny_run(out: Path, **pipeline: Any) -> tuple[dict[str, Any], RunConfig, MarketData]:
    """A pipeline run of a few seconds on the synthetic market: (summary, config, market)."""
    values = {k: dict(v) for k, v in TINY.items()}
    values["pipeline"].update(pipeline, output_dir=str(out))
    config = run_config_from_dict(values)
    market = synthetic_market(config.data.pairs, "1h", seed=0, days=config.data.synthetic_days)
    out.mkdir(parents=True)
    return run_pipeline(config, market, logging.getLogger("test"), out), config, market


@pytest.fixture(scope="module")
def lcb_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tiny_run(tmp_path_factory.mktemp("lcb") / "out", selection="lcb")


def every_candidate(summary: dict[str, Any]) -> list[tuple[str, float]]:
    """(model file, validation score) of every candidate in the pipeline's order."""
    out = [(r["model_path"], r["val_score"]) for r in summary["initial_runs"]]
    out += [(it["model_path"], it["score"]) for it in summary["retraining_iterations"]]
    if "ensemble" in summary:
        out.append((summary["ensemble"]["model_path"], summary["ensemble"]["val_score"]))
    return out


def recomputed_choice(
    summary: dict[str, Any], config: RunConfig, market: MarketData
) -> tuple[int, list[dict[str, Any]]]:
    """(index of the highest lower bound, the first on ties; each candidate's excess record),
    from a fresh greedy run of each saved model over the newest validation window."""
    val = validation_folds(market, config)[-1].val
    excess = []
    for path, _ in every_candidate(summary):
        agent, _ = load_policy(path)
        excess.append(excess_daily_return(val, greedy_run(agent, val, config.market), seed=42))
    lows = [e["low_pct"] for e in excess]
    return lows.index(max(lows)), excess


def test_lcb_chooses_the_candidate_with_the_highest_lower_bound(lcb_run: Any) -> None:
    summary, config, market = lcb_run
    expected, excess = recomputed_choice(summary, config, market)
    candidates = every_candidate(summary)
    selection = summary["selection"]
    assert [c["model_path"] for c in selection["candidates"]] == [p for p, _ in candidates]
    for row, record in zip(selection["candidates"], excess, strict=True):
        assert row["low_pct"] == pytest.approx(record["low_pct"])
        assert row["high_pct"] == pytest.approx(record["high_pct"])
        assert row["excess_daily_pct"] == pytest.approx(record["mean_pct"])
    chosen_path, chosen_score = candidates[expected]
    assert selection["chosen"] == chosen_path == summary["final_model_source"]
    assert summary["final_model_score"] == chosen_score
    kind = "ensemble" if chosen_path == summary["ensemble"]["model_path"] else "single"
    assert summary["final_model_kind"] == kind
    val = validation_folds(market, config)[-1].val
    assert selection["window"]["bars"] == val.n_bars and selection["seed"] == 42
    # The no-edge gate judges the chosen model on the same days with the same seed.
    assert summary["edge"]["excess_daily_return"]["low_pct"] == pytest.approx(
        excess[expected]["low_pct"]
    )
    log = (Path(summary["final_model_path"]).parent / "training.log").read_text()
    assert f"selection lcb: chose {chosen_path}" in log
    report = (Path(summary["final_model_path"]).parent / "training_report.md").read_text()
    assert (
        f"({kind}, chosen by the highest lower bound of the daily excess over cash among "
        f"{len(candidates)} candidates: {excess[expected]['mean_pct']:+.4f}%/day"
    ) in report
    page = (Path(summary["final_model_path"]).parent / "report.html").read_text()
    assert f"final model: {kind}, chosen by the highest lower bound" in page


def same_content(a: Any, b: Any) -> bool:
    """Checkpoint contents equal, tensors by value, nested dicts and lists included."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same_content(a[k], b[k]) for k in a)
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_content, a, b))
    return bool(a == b)


def test_final_model_holds_the_chosen_models_weights(lcb_run: Any) -> None:
    summary = lcb_run[0]
    final = torch.load(summary["final_model_path"], weights_only=True)
    chosen = torch.load(summary["selection"]["chosen"], weights_only=True)
    # Only ``extra`` differs: the no-edge gate writes its verdict into the final model.
    assert "edge" in final["extra"]
    assert same_content({**final, "extra": None}, {**chosen, "extra": None})
    others = [p for p, _ in every_candidate(summary) if p != summary["selection"]["chosen"]]
    for path in others:
        other = torch.load(path, weights_only=True)
        assert not same_content({**final, "extra": None}, {**other, "extra": None}), path


def test_lcb_choice_is_the_same_on_a_second_run(lcb_run: Any, tmp_path: Path) -> None:
    first = lcb_run[0]
    second = tiny_run(tmp_path / "out", selection="lcb")[0]
    root_1 = str(Path(first["final_model_path"]).parent)
    root_2 = str(Path(second["final_model_path"]).parent)
    rows_1 = [{**r, "model_path": r["model_path"].replace(root_1, "")}
              for r in first["selection"]["candidates"]]  # fmt: skip
    rows_2 = [{**r, "model_path": r["model_path"].replace(root_2, "")}
              for r in second["selection"]["candidates"]]  # fmt: skip
    assert rows_1 == rows_2
    assert first["selection"]["chosen_index"] == second["selection"]["chosen_index"]


def test_default_score_selection_is_unchanged(tmp_path: Path) -> None:
    summary, config, _ = tiny_run(tmp_path / "out")
    assert config.pipeline.selection == "score" and "selection" not in summary
    report = (Path(summary["final_model_path"]).parent / "training_report.md").read_text()
    assert f"({summary['final_model_kind']}, chosen by validation score)" in report
    singles = [c for c in every_candidate(summary) if c[0] != summary["ensemble"]["model_path"]]
    best_path, best_score = max(singles, key=lambda c: c[1])  # the first on ties
    assert summary["final_best_score"] == best_score
    if summary["ensemble"]["val_score"] > best_score:
        assert summary["final_model_source"] == summary["ensemble"]["model_path"]
    else:
        assert summary["final_model_source"] == best_path
    # Finished runs keep their hashes: the setting is hashed only away from its default.
    assert "selection" not in result_config(config)["pipeline"]
    lcb = run_config_from_dict({**config.to_dict(), "pipeline": {
        **config.to_dict()["pipeline"], "selection": "lcb"}})  # fmt: skip
    assert result_config(lcb)["pipeline"]["selection"] == "lcb"


def test_seed_ensemble_is_one_candidate_under_lcb(tmp_path: Path) -> None:
    summary, config, market = tiny_run(tmp_path / "out", selection="lcb", ensemble_size=0,
                                       ensemble_members="seeds", max_iterations=1)  # fmt: skip
    paths = [row["model_path"] for row in summary["selection"]["candidates"]]
    assert paths[-1] == summary["ensemble"]["model_path"] and len(paths) == 4
    expected, _ = recomputed_choice(summary, config, market)
    assert summary["selection"]["chosen_index"] == expected
    kind = "ensemble" if expected == len(paths) - 1 else "single"
    assert summary["final_model_kind"] == kind


def test_walk_forward_chooses_on_the_newest_window(tmp_path: Path) -> None:
    summary, config, market = tiny_run(tmp_path / "out", selection="lcb",
                                       validation="walk-forward", validation_folds=2,
                                       max_iterations=1, ensemble_size=0)  # fmt: skip
    selection = summary["selection"]
    assert selection["compared_on"] == "newest walk-forward window"
    newest = validation_folds(market, config)[-1].val
    assert selection["window"]["start"] == newest.span()[0].isoformat()
    assert selection["window"]["bars"] == newest.n_bars
    # The newest-fold models, the only ones that have not seen that window.
    assert all("fold_2" in row["model_path"] for row in selection["candidates"])
    assert selection["chosen_index"] == recomputed_choice(summary, config, market)[0]


def test_a_steady_edge_beats_a_larger_erratic_one() -> None:
    erratic = np.tile([0.05, -0.04], 15)  # mean +0.5%/day, swinging 4.5% either side
    steady = np.full(30, 0.001)  # +0.1% every day
    chosen, excess = choose_by_lower_bound([erratic, steady], seed=7)
    assert excess[0]["mean_pct"] == pytest.approx(0.5)  # the maximum rule would take this one
    # Every resample of a constant series has the same mean: the interval is the point.
    assert excess[1]["low_pct"] == pytest.approx(0.1) == excess[1]["high_pct"]
    assert excess[0]["low_pct"] < 0.0  # about 0.5 - 1.96 * 4.5 / sqrt(30) = -1.1
    assert chosen == 1


def test_ties_go_to_the_earlier_candidate_and_one_day_cannot_win() -> None:
    steady = np.full(30, 0.001)
    assert choose_by_lower_bound([steady, steady.copy()], seed=0)[0] == 0
    assert choose_by_lower_bound([np.array([0.5]), steady], seed=0)[0] == 1
    lows = [{"low_pct": None}, {"low_pct": -0.2}, {"low_pct": 0.1}, {"low_pct": 0.1}]
    assert highest_lower_bound(lows) == 2
    with pytest.raises(TrainingError, match=r"pipeline\.selection lcb"):
        choose_by_lower_bound([np.array([0.01]), np.array([])], seed=0)


def test_a_bad_selection_is_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"pipeline\.selection: 'max' is invalid"):
        PipelineConfig(selection="max")
    with pytest.raises(ConfigError, match=r"pipeline\.selection"):
        run_config_from_dict({"pipeline": {"selection": "best"}})
    parser = build_parser(["train"])
    args = parser.parse_args(["train", "--selection", "lcb"])
    assert overrides_from_args(args)["pipeline"]["selection"] == "lcb"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--selection", "max"])
