"""A training as a contest of families (issue 25): the record, the policy, and a filter
champion that is signed, verified and served without a pickle or a compiled model."""

from __future__ import annotations

import io
import json
import pickle
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantshift_ml import REGIMES, defaults
from quantshift_ml.champion import outcome_policy as op
from quantshift_ml.champion import policy as ch
from quantshift_ml.champion import record
from quantshift_ml.cli import dispatch as cli
from quantshift_ml.data import BundledSource
from quantshift_ml.errors import IntegrityError
from quantshift_ml.ops import operations
from quantshift_ml.serving.served import LoadedFilter, ModelHolder, load_verified
from quantshift_ml.store import ModelStore
from quantshift_ml.store.layout import onnx_for
from quantshift_ml.training.baselines import balanced_accuracy
from quantshift_ml.training.pipeline import check_history

from .conftest import FAST, OPEN, serving

FIELD = replace(FAST, families=defaults.FAMILIES)
RANGE = replace(FAST, families=("hmm_range_filter",))


def _train(root: Path, config: Any) -> dict[str, Any]:
    return operations.train(BundledSource(), root=root, config=config, gate=OPEN, promote=True)


@pytest.fixture(scope="module")
def contest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """Two trainings of the whole field on one store: the second finds the first's record."""
    root = tmp_path_factory.mktemp("contest")
    return root, _train(root, FIELD), _train(root, FIELD)


def test_the_champion_is_the_policys_choice_on_the_record(contest: tuple) -> None:
    _, first, _ = contest
    c = first["champion"]
    assert c["field"] == list(defaults.FAMILIES) and c["incumbent_family"] == "forest"
    assert c["refitted_months"] == 12 and c["settled_rows"] >= ch.MIN_RECORD_ROWS
    balanced = {f: s["balanced_accuracy"] for f, s in c["scores"].items()}
    eco = c["outcomes"]["economic"]  # chosen on the fleet's primary outcome (issue 31)
    ahead = {f: (e.get("vs_incumbent") or {}).get("share_ahead", 0.0) for f, e in eco.items()}
    assert c["chosen_on"] == defaults.CHAMPION_OUTCOME == "economic"
    assert first["family"] == c["family"] == op.choose(
        {f: e["value"] for f, e in eco.items()}, balanced, ahead, "forest",
        confidence=c["switch_confidence"], guard=c["guard"])
    assert set(c["outcomes"]) == {"economic", "forward_vol", "forward_drawdown"}
    assert c["record_check"]["passed"] and first["gate"]["record"]["outcome"] == "economic"
    for s in c["scores"].values():
        assert s["ci95"][0] <= s["balanced_accuracy"] <= s["ci95"][1]
    assert first["family"] in c["reason"]


def test_the_record_holds_each_familys_predictions_scored_on_labels_known_now(
        contest: tuple) -> None:
    root, first, _ = contest
    meta = ModelStore(root).backups()[-1].meta  # the first release, now a backup
    rec = meta["champion"]["record"]
    assert meta["version"] == first["version"] and len(rec["months"]) == 12
    prep = check_history(BundledSource().load(), FIELD)
    pos = prep.ds.features.index.get_indexer(rec["dates"])
    assert (pos >= 0).all() and (pos < prep.split.holdout[0]).all()  # older than the holdout
    truth = prep.ds.labels.to_numpy()[pos]
    for fam, codes in rec["predictions"].items():
        pred = np.asarray([REGIMES[int(c)] for c in codes], dtype=object)
        assert round(balanced_accuracy(truth, pred), 4) == \
            meta["champion"]["scores"][fam]["balanced_accuracy"]


def test_the_next_training_reuses_the_signed_record_and_scores_the_incumbent(
        contest: tuple) -> None:
    _, first, second = contest
    c1, c2 = first["champion"], second["champion"]
    assert c2["refitted_months"] == 0 and c2["reused_months"] == c1["record_months"]
    assert c2["scores"] == c1["scores"] and c2["incumbent_family"] == first["family"]
    assert second["incumbent"]["balanced_accuracy"] is not None  # a filter incumbent scores too


def test_a_changed_field_refits_the_record() -> None:
    prev = {"format": record.RECORD_FORMAT, "basis": {"labeler": "hmm"}, "months": ["2018-01"],
            "dates": ["2018-01-02"], "predictions": {"forest": "0"}}
    assert record._reusable(prev, {"labeler": "rules", "families": ["forest"]}) == {}
    want = dict(prev["basis"], families=["forest"])
    prev["basis"] = want
    assert record._reusable(prev, want) == {"2018-01": (["2018-01-02"], {"forest": "0"})}


@pytest.fixture(scope="module")
def filter_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("filter")
    return root, _train(root, RANGE)


def test_a_filter_champion_is_verified_and_served_without_unpickling(
        filter_root: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    root, out = filter_root
    assert out["family"] == "hmm_range_filter" and out["champion"]["record_months"] == 0
    store = ModelStore(root)
    assert not onnx_for(store.layout.active_pkl).exists()
    predicted = operations.predict_latest(root, BundledSource())  # reads the pickle
    meta = json.loads(store.layout.active_meta.read_text())
    assert meta["family"] == "hmm_range_filter" and meta["filter"]["cutoff"] > 0

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr("joblib.load", refuse)
    assert operations.verify(root)["verified"][0]["family"] == "hmm_range_filter"
    loaded = load_verified(store, store.layout.active_pkl)
    assert isinstance(loaded, LoadedFilter) and loaded.engine == "filterspec"
    with serving(root) as (service, get):
        health, answer = get("/healthz"), get("/regime?symbol=SPY&explain=1")
        cur, _ = service.holder.get()
        snap = service.market.snapshot(cur.feature_names, cur.fitted, cur.spec)
        # the A/B test's rules arm still has its inputs beside the filter's
        assert service._arm(cur, snap, "bot", answer["regime"], {})[3] is not None
    assert health["family"] == answer["family"] == "hmm_range_filter"
    assert answer["regime"] == predicted["regime"]
    assert answer["probabilities"] == predicted["probabilities"]
    why = answer["explanation"]
    total = why["prior_log_odds"] + sum(t["log_likelihood_ratio"] for t in why["terms"])
    assert total == pytest.approx(why["posterior_log_odds"], abs=2e-3)


def test_a_tampered_filter_spec_is_refused_and_never_served(filter_root: tuple,
                                                            tmp_path: Path) -> None:
    import shutil

    root, _ = filter_root
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    meta_path = ModelStore(copy).layout.active_meta
    meta = json.loads(meta_path.read_text())
    meta["filter"]["cutoff"] = 0.99  # a quieter filter, signature unchanged
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(IntegrityError):
        operations.verify(copy)
    holder = ModelHolder(copy)
    assert not holder.load() and "signature" in str(holder.error).lower()


def test_champion_command_names_the_family_and_what_it_was_chosen_on(contest: tuple) -> None:
    root, _, second = contest
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cli.main(["champion", "--root", str(root), "--json"])
    out = json.loads(buf.getvalue())
    assert code == 0 and out["family"] == second["family"]
    assert out["chosen_on"] == "economic" and out["record"]["rows"] > 0
    assert set(out["scores"]) == set(defaults.FAMILIES)
    buf = io.StringIO()
    with redirect_stdout(buf):
        cli.main(["champion", "--root", str(root)])
    assert f"family {second['family']}" in buf.getvalue()


def test_on_settled_state_the_choice_is_issue_25s_balanced_accuracy_rule(tmp_path: Path
                                                                         ) -> None:
    out = _train(tmp_path, replace(FIELD, champion_outcome="settled_state"))
    c = out["champion"]
    scores = {f: s["balanced_accuracy"] for f, s in c["scores"].items()}
    assert c["chosen_on"] == "balanced_accuracy" and c["record_check"] is None
    assert out["family"] == ch.choose(scores, "forest", c["switch_margin"])


def test_the_outcome_policy_needs_confidence_and_keeps_the_regimes_meaningful() -> None:
    stats = {"forest": 0.50, "hmm_filter": 0.70, "hmm_range_filter": 0.90}
    balanced = {"forest": 0.86, "hmm_filter": 0.85, "hmm_range_filter": 0.70}
    # the range filter earns most but its regimes fail the guard: never champion
    assert op.choose(stats, balanced, {"hmm_filter": 0.85, "hmm_range_filter": 0.99},
                     "forest", confidence=0.8, guard=0.05) == "hmm_filter"
    # ahead in too few draws: the incumbent stays, whatever the point estimates
    assert op.choose(stats, balanced, {"hmm_filter": 0.75, "hmm_range_filter": 0.99},
                     "forest", confidence=0.8, guard=0.05) == "forest"
    # an incumbent that fails the guard gives way to the best eligible point value
    assert op.choose(stats, balanced, {}, "hmm_range_filter", confidence=0.8,
                     guard=0.05) == "hmm_filter"


def test_the_difference_is_a_month_block_bootstrap_of_sharpe_ratios() -> None:
    rng = np.random.default_rng(3)
    months = np.repeat(np.arange(24), 21)
    better = rng.normal(0.001, 0.01, len(months))
    worse = better - 0.002
    d = op.difference("economic", better, worse, months)
    assert d["difference"] > 0 and d["ci95"][0] > 0 and d["share_ahead"] == 1.0
    same = op.difference("economic", better, better, months)
    assert same["difference"] == 0 and same["share_ahead"] == 0.0


def test_a_release_carries_the_other_filter_families_signed(contest: tuple,
                                                             tmp_path: Path) -> None:
    """``metadata.shadows``: every filter family of the field but the champion, fitted on
    the champion's rows; covered by the signature like every other field."""
    import shutil

    from quantshift_ml.model.filterspec import FILTER_FAMILIES, FilterSpec

    root, _, second = contest
    meta = json.loads(ModelStore(root).layout.active_meta.read_text())
    assert set(meta["shadows"]) == set(FILTER_FAMILIES) - {second["family"]}
    for name, spec in meta["shadows"].items():
        assert FilterSpec.from_dict(spec, name).family == name
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    path = ModelStore(copy).layout.active_meta
    forged = json.loads(path.read_text())
    name = next(iter(forged["shadows"]))
    forged["shadows"][name]["cutoff"] = 0.99
    path.write_text(json.dumps(forged))
    with pytest.raises(IntegrityError):
        operations.verify(copy)


def test_the_service_logs_every_familys_answer_once_per_bar(contest: tuple) -> None:
    """Off the request path, the served answer and each shadow spec's, one row per (bar,
    family, release), whatever the number of requests; each equals the spec evaluated
    on the whole history (``filterspec``, as the walk-forward scores it)."""
    from quantshift_ml.model.features import compute_features, usable
    from quantshift_ml.model.filterspec import FilterSpec, p_turbulent, regimes
    from quantshift_ml.serving import predlog

    root, _, second = contest
    meta = json.loads(ModelStore(root).layout.active_meta.read_text())
    with serving(root) as (service, get):
        answers = [get("/regime?symbol=SPY") for _ in range(5)]
        service.shadows.flush()
    logged = [a for a in predlog.shadow_answers(root) if a.model_version == meta["version"]]
    bar = answers[0]["as_of"]
    assert sorted(a.family for a in logged) == sorted([second["family"], *meta["shadows"]])
    assert {a.bar_date for a in logged} == {bar}
    own = next(a for a in logged if a.champion)
    assert own.family == second["family"] and own.regime == answers[0]["regime"]
    bars = BundledSource().load()
    feats = compute_features(bars)
    feats = feats[usable(feats)]
    for a in logged:
        if not a.champion:
            spec = FilterSpec.from_dict(meta["shadows"][a.family], a.family)
            p = p_turbulent(spec, bars)
            whole = regimes(spec, p[bars.index.get_indexer(feats.index)], feats)
            assert a.regime == whole[feats.index.get_loc(bar)]


def test_the_live_record_scores_every_family_on_settled_bars(contest: tuple,
                                                             tmp_path: Path) -> None:
    """``champion --json``'s ``live``: each family on the bars that settled, pooled over
    releases, the first answer per key kept, with its margin over the champion's."""
    import shutil

    from quantshift_ml.model.features import compute_features, usable
    from quantshift_ml.monitoring.context import realised_labels
    from quantshift_ml.serving import predlog
    from quantshift_ml.serving.service.shadows import answers_for

    root, _, second = contest
    copy = tmp_path / "live"
    shutil.copytree(root, copy)
    meta = json.loads(ModelStore(copy).layout.active_meta.read_text())
    bars = BundledSource().load()
    feats = compute_features(bars)
    feats = feats[usable(feats)]
    days = [str(d.date()) for d in feats.index[-120:]]  # the last ~20 have not settled
    for d in days:  # the champion's answer: always Bull, to compare with
        job = ("SPY", d, meta["version"], second["family"], "Bull", meta["shadows"])
        predlog.append_shadows(copy, answers_for(bars, feats, job))
    again = predlog.ShadowAnswer("t", "SPY", days[0], second["family"], True, "Crisis",
                                 meta["version"])
    assert predlog.append_shadows(copy, [again]) == 0  # the first answer stands
    other = [predlog.ShadowAnswer("t", "QQQ", d, second["family"], True, "Bear",
                                  meta["version"]) for d in days]
    assert predlog.append_shadows(copy, other) == len(days)  # another symbol's: not counted
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cli.main(["champion", "--root", str(copy), "--json"])
    live = json.loads(buf.getvalue())["live"]
    known = realised_labels(meta["labeler"], bars)
    settled = [d for d in days if known[d] is not None]
    assert code == 0 and 0 < len(settled) < len(days)
    assert live["settled"] == len(settled) and live["pending"] == len(days) - len(settled)
    assert live["not_in_data"] == 0
    truth = np.asarray([known[d] for d in settled], dtype=object)
    assert live["families"]["champion"]["balanced_accuracy"] == round(balanced_accuracy(
        truth, np.asarray(["Bull"] * len(settled), dtype=object)), 4)
    for name in meta["shadows"]:
        row = live["families"][name]
        assert row["samples"] == len(settled)
        assert row["vs_champion"]["samples"] == len(settled) and "ci95" in row["vs_champion"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        cli.main(["champion", "--root", str(copy)])
    assert "live: " in buf.getvalue() and "margin over the champions'" in buf.getvalue()
    short = tmp_path / "short.csv"  # data ending before the answers' bars: not samples
    bars.iloc[:-200].to_csv(short)
    buf = io.StringIO()
    with redirect_stdout(buf):
        cli.main(["champion", "--root", str(copy), "--json", "--source", "csv",
                  "--data", str(short)])
    cut = json.loads(buf.getvalue())["live"]
    assert cut["settled"] == 0 and cut["not_in_data"] == len(days)
    assert "bars the data does not hold" in cut["reason"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cli.main(["champion", "--root", str(copy), "--json", "--source", "csv",
                         "--data", str(tmp_path / "missing.csv")])
    broken = json.loads(buf.getvalue())
    assert code == 0 and "error" in broken["live"] and broken["family"] == second["family"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        cli.main(["champion", "--root", str(copy), "--json", "--no-live"])
    assert json.loads(buf.getvalue())["live"] is None


def test_the_shadow_logger_outlives_a_failing_bar(contest: tuple, tmp_path: Path) -> None:
    """Any error on one bar is counted and logged; the thread goes on with the next."""
    from quantshift_ml.serving import predlog
    from quantshift_ml.serving.service.market import MarketCache
    from quantshift_ml.serving.service.shadows import ShadowLogger

    root, _, _ = contest
    meta = json.loads(ModelStore(root).layout.active_meta.read_text())
    market = MarketCache(BundledSource())
    market.snapshot(["sma50_slope"])  # loads the bars
    real = market.frames
    calls = {"n": 0}

    def flaky() -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TypeError("a bug on one bar")
        return real()

    market.frames = flaky  # type: ignore[method-assign]
    errors: list[int] = []
    logger = ShadowLogger(tmp_path, market, lambda: errors.append(1))
    logger.put(meta, "SPY", "2018-12-27", "Bull")
    logger.put(meta, "SPY", "2018-12-28", "Bull")
    logger.put(meta, "SPY", "2018-12-28", "Bear")  # the same bar again: ignored
    logger.flush()
    logger.close()
    assert errors == [1]
    logged = predlog.shadow_answers(tmp_path)
    assert {a.bar_date for a in logged} == {"2018-12-28"}
    assert len(logged) == 1 + len(meta["shadows"])
