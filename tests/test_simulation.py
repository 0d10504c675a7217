"""The simulator: determinism, network options, the result's shape, validation,
baselines, and (marked slow) the acceptance runs on digits."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from gossipd.sim.batched import BatchedSimulation
from gossipd.sim.simulation import BASELINES, ConfigError, Simulation, SimulationConfig, simulate

SERIES_KEYS = {
    "cycle", "mean_accuracy", "min_accuracy", "max_accuracy", "messages", "bytes", "sampling_messages",
    "sampling_bytes", "dead_link_fraction", "largest_component_fraction",
}


def run(digits, engine="exact", **kw):
    """Gossip only (no baselines), on the shared digits split, by ``engine``; returns
    (result, simulation)."""
    cls = BatchedSimulation if engine == "batched" else Simulation
    sim = cls.create(SimulationConfig(**kw), digits)
    return sim.run(), sim


def totals(sim: Simulation | BatchedSimulation) -> Counter:
    c: Counter = Counter()
    if isinstance(sim, BatchedSimulation):
        c.update({k: int(v.sum()) for k, v in sim.counters.items()})
        return c
    for node in sim.nodes:
        c.update(node.counters.as_dict())
    return c


#: The behaviour below is the experiment's, whichever engine runs it.
ENGINES = pytest.mark.parametrize("engine", ["exact", "batched"])


# ------------------------------------------------------------------ determinism


@ENGINES
def test_same_config_same_series_other_seed_other_series(digits, engine):
    kw = dict(nodes=30, cycles=30, eval_every=5, drop=0.1, online=0.9)
    a, _ = run(digits, engine, seed=3, **kw)
    b, _ = run(digits, engine, seed=3, **kw)
    c, _ = run(digits, engine, seed=4, **kw)
    assert a["series"] == b["series"]
    assert a["final"] == b["final"]
    assert a["series"] != c["series"]


def test_simulate_loads_data_itself_and_is_deterministic():
    cfg = SimulationConfig(nodes=20, cycles=10, eval_every=5, seed=7, baselines=("local", "fedavg"))
    a, b = simulate(cfg), simulate(cfg)
    assert a["series"] == b["series"]
    assert a["baselines"] == b["baselines"]


# ------------------------------------------------------------------ the result


@pytest.fixture(scope="module")
def full_result():
    return simulate(SimulationConfig(nodes=30, cycles=20, eval_every=5, seed=2, baselines=BASELINES))


def test_result_is_json_with_required_keys(full_result):
    r = json.loads(json.dumps(full_result))
    assert r["config"]["nodes"] == 30 and r["config"]["cycles"] == 20 and r["config"]["seed"] == 2
    assert [e["cycle"] for e in r["series"]] == [0, 5, 10, 15, 20]
    for e in r["series"]:
        assert SERIES_KEYS <= set(e)
        assert 0.0 <= e["min_accuracy"] <= e["mean_accuracy"] <= e["max_accuracy"] <= 1.0
        assert 0.0 <= e["dead_link_fraction"] <= 1.0
        assert 0.0 < e["largest_component_fraction"] <= 1.0
    for key in ("messages", "bytes", "sampling_messages", "sampling_bytes"):
        values = [e[key] for e in r["series"]]
        assert values == sorted(values) and values[0] >= 0 and values[-1] > 0
    assert r["series"][-1]["bytes"] == r["series"][-1]["messages"] * r["model"]["message_bytes"]
    assert r["final"]["mean_accuracy"] == r["series"][-1]["mean_accuracy"]
    assert set(r["final"]["indegree"]) >= {"mean", "std", "max"}
    assert 0 < r["final"]["indegree"]["mean"] <= r["config"]["view_size"]
    assert 0.0 < r["baselines"]["centralised"]["accuracy"] <= 1.0
    assert 0.0 < r["baselines"]["local"]["final"]["mean_accuracy"] <= 1.0
    fed = r["baselines"]["fedavg"]
    assert [e["cycle"] for e in fed["series"]] == [0, 5, 10, 15, 20]
    assert 0.0 < fed["final"]["mean_accuracy"] <= 1.0
    assert all("bytes" in e and "messages" in e for e in fed["series"])
    assert r["wall_seconds"] > 0


def test_gossip_beats_an_untrained_model(full_result):
    series = full_result["series"]
    assert series[0]["mean_accuracy"] < 0.2  # everybody starts from the same untrained model
    assert series[-1]["mean_accuracy"] > 0.8
    assert series[-1]["mean_accuracy"] > full_result["baselines"]["local"]["final"]["mean_accuracy"]


def test_fedavg_costs_two_messages_per_participant_per_round(full_result):
    fed = full_result["baselines"]["fedavg"]
    size = full_result["model"]["message_bytes"]
    for e in fed["series"]:
        assert e["messages"] == 2 * 30 * e["cycle"]  # online=1: all 30 clients every round
        assert e["bytes"] == e["messages"] * size


def test_fedavg_partial_participation(digits):
    from gossipd.sim.baselines import FedAvgSettings, fedavg
    from gossipd.sim.sizes import MessageSizes
    from gossipd.data import split_indices
    from gossipd.core.learner import LocalData, make_learner

    n, rounds = 40, 30
    learner = make_learner("logreg", digits.schema)
    parts = split_indices(digits.y_train, n, "iid", np.random.default_rng(0))
    datas = [LocalData.from_numpy(digits.X_train[p], digits.y_train[p], digits.n_classes) for p in parts]
    out = fedavg(digits, learner, datas, rounds, 1, FedAvgSettings(epochs=1, participation=0.5),
                 np.random.default_rng(0))
    per_round = np.diff([e["messages"] for e in out["series"]])
    assert len(per_round) == rounds
    assert (per_round % 2 == 0).all()
    assert ((per_round >= 2) & (per_round <= 2 * n)).all()
    assert 0.35 * n < per_round.mean() / 2 < 0.65 * n
    # Whole fp32 models both ways: every transfer is one model message.
    assert out["final"]["bytes"] == out["final"]["messages"] * MessageSizes(learner).model_bytes("fp32")
    assert out["final"]["upload_bytes"] == out["final"]["download_bytes"]


@ENGINES
def test_indegree_of_full_sampler(digits, engine):
    r, _ = run(digits, engine, nodes=20, cycles=5, sampler="full")
    assert r["final"]["indegree"] == {"mean": 19.0, "std": 0.0, "max": 19.0}
    assert all(e["largest_component_fraction"] == 1.0 for e in r["series"])
    assert all(e["sampling_messages"] == 0 for e in r["series"])  # static overlays never shuffle


@ENGINES
@pytest.mark.parametrize("sampler", ["ring", "kregular:4", "smallworld:4,0.2", "random:0.3", "full"])
def test_static_samplers_run_and_learn(digits, sampler, engine):
    r, sim = run(digits, engine, nodes=20, cycles=20, sampler=sampler, seed=1)
    assert r["final"]["mean_accuracy"] > r["series"][0]["mean_accuracy"] + 0.3
    assert r["final"]["sampling_messages"] == 0
    if sampler == "ring":
        assert r["final"]["indegree"] == {"mean": 2.0, "std": 0.0, "max": 2.0}
    if sampler == "kregular:4":
        assert r["final"]["indegree"]["mean"] == 4.0 and r["final"]["indegree"]["std"] == 0.0


# ------------------------------------------------------------------ network options


@ENGINES
def test_every_push_is_delivered_without_loss(digits, engine):
    r, sim = run(digits, engine, nodes=30, cycles=30, delay=0.0)
    t = totals(sim)
    assert t["sent"] == r["final"]["messages"]
    assert t["received"] == t["merged"]
    # without delay the exact engine delivers at once; the batched one in the next slice, so
    # what the last slice (0.1 cycle) sent is still in flight at the end
    in_flight = t["sent"] - t["received"]
    assert in_flight == 0 if engine == "exact" else 0 <= in_flight <= 2 * 30 * 0.1
    assert t["send_failures"] == 0 and t["rejected"] == 0
    # about one push per node per cycle
    assert 0.8 * 30 * 30 < t["sent"] < 1.2 * 30 * 30


@ENGINES
def test_drop_loses_that_share_of_messages(digits, engine):
    r, sim = run(digits, engine, nodes=40, cycles=30, drop=0.3)
    t = totals(sim)
    assert t["sent"] == r["final"]["messages"]
    assert 0.6 < t["merged"] / t["sent"] < 0.8
    assert r["final"]["mean_accuracy"] > 0.8  # gossip tolerates loss


@ENGINES
def test_lost_requests_and_replies_are_timeouts_at_the_sender(digits, engine):
    """As over HTTP: a lost request is never merged, a lost reply was merged by the
    receiver; either way the sender sees a timeout, never silence."""
    r, sim = run(digits, engine, nodes=30, cycles=30, drop=0.3, sampler="full")
    t = totals(sim)
    assert 0.6 < t["merged"] / t["sent"] < 0.8  # 70% of requests arrive
    assert 0.45 < t["timeouts"] / t["sent"] < 0.57  # 1 - 0.7 x 0.7: the request or the reply was lost
    assert t["send_failures"] == t["timeouts"]  # nobody is down: no refused connections


@ENGINES
def test_churn_reduces_traffic_and_causes_failed_sends(digits, engine):
    full, sim_full = run(digits, engine, nodes=40, cycles=30)
    churn, sim_churn = run(digits, engine, nodes=40, cycles=30, online=0.5, session=5.0)
    assert totals(sim_full)["send_failures"] == 0
    assert totals(sim_churn)["send_failures"] > 0
    ratio = churn["final"]["messages"] / full["final"]["messages"]
    assert 0.3 < ratio < 0.7
    assert all(e["live_nodes"] == 40 for e in churn["series"])  # offline is not dead


@ENGINES
def test_kill_reduces_live_nodes_and_cyclon_heals(digits, engine):
    r, sim = run(digits, engine, nodes=50, cycles=40, kill="0.5@10", eval_every=2, view_size=8, shuffle_length=4)
    by_cycle = {e["cycle"]: e for e in r["series"]}
    assert all(by_cycle[c]["live_nodes"] == 50 for c in range(0, 10, 2))
    assert all(by_cycle[c]["live_nodes"] == 25 for c in range(10, 41, 2))
    assert all(by_cycle[c]["dead_link_fraction"] == 0.0 for c in range(0, 10, 2))
    peak = by_cycle[10]["dead_link_fraction"]
    assert peak > 0.3  # right after the crash about half the links point at the dead
    assert by_cycle[40]["dead_link_fraction"] < 0.05  # Cyclon has dropped them
    assert max(e["dead_link_fraction"] for e in r["series"]) == peak
    assert totals(sim)["send_failures"] > 0
    assert all(e["largest_component_fraction"] == 1.0 for e in r["series"] if e["cycle"] >= 4)
    assert r["final"]["indegree"]["mean"] > 0
    assert r["final"]["mean_accuracy"] > 0.8


@ENGINES
def test_kill_on_static_overlay_leaves_dead_links(digits, engine):
    r, _ = run(digits, engine, nodes=40, cycles=30, kill="0.5@10", eval_every=5, sampler="kregular:6")
    after = [e["dead_link_fraction"] for e in r["series"] if e["cycle"] >= 10]
    assert min(after) > 0.3
    assert max(after) - min(after) < 1e-12  # a static overlay does not heal, by design


@ENGINES
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cyclon_overlay_is_connected_after_bootstrap(digits, seed, engine):
    """Views start empty and fill from the seeds: by cycle 10 the overlay must be one component.

    KNOWN ISSUE (another engineer is on it): seeds 2 and 3 give 0.37 / 0.62, see the report.
    """
    r, _ = run(digits, engine, nodes=100, cycles=30, split="labels", seed=seed, eval_every=10)
    fractions = {e["cycle"]: e["largest_component_fraction"] for e in r["series"] if e["cycle"] >= 10}
    assert fractions == {10: 1.0, 20: 1.0, 30: 1.0}


def test_merge_rules_run(digits):
    results = {m: run(digits, nodes=20, cycles=20, merge=m)[0] for m in ("age", "average", "overwrite", "limited:50")}
    for m, r in results.items():
        assert r["final"]["mean_accuracy"] > 0.7, m
    # overwrite is a random walk: it learns, but nodes do not average
    assert results["overwrite"]["final"]["mean_accuracy"] != results["age"]["final"]["mean_accuracy"]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(nodes=0), "nodes"),
        (dict(nodes=1), "nodes"),
        (dict(cycles=0), "cycles"),
        (dict(cycles=-1), "cycles"),
        (dict(eval_every=0), "eval_every"),
        (dict(view_size=0), "view_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(drop=1.0), "drop"),
        (dict(drop=-0.1), "drop"),
        (dict(online=0.0), "online"),
        (dict(online=1.5), "online"),
        (dict(delay=-1.0), "delay"),
        (dict(session=0.0), "session"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(jitter=1.0), "jitter"),
        (dict(split="bad"), "split"),
        (dict(split="dirichlet:-1"), "split"),
        (dict(merge="foo"), "merge"),
        (dict(model="cnn:x"), "model"),
        (dict(scaling="global"), "scaling"),
        (dict(task="ranking"), "task"),
        (dict(input_shape="8by8"), "input_shape"),
        (dict(sampler="weird"), "sampler"),
        (dict(sampler="kregular:x"), "sampler"),
        (dict(kill="2@5"), "kill"),
        (dict(kill="0.5"), "kill"),
        (dict(kill="0.5@500"), "kill"),
        (dict(view_size=4, shuffle_length=5), "shuffle_length"),
        (dict(baselines=("foo",)), "baselines"),
    ],
)
def test_validation_errors_name_the_field(kwargs, field):
    cfg = SimulationConfig(**kwargs)
    with pytest.raises(ConfigError) as exc:
        cfg.validate()
    assert exc.value.field == field
    assert f"--{field.replace('_', '-')}" in str(exc.value)
    with pytest.raises(ConfigError):
        simulate(cfg)


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError) as exc:
        simulate(SimulationConfig(dataset="nope", nodes=5, cycles=1))
    assert exc.value.field == "dataset"
    assert "--dataset" in str(exc.value) and "nope" in str(exc.value)


def test_default_config_is_valid():
    SimulationConfig().validate()


# ------------------------------------------------------------------ acceptance (slow)


def _final(result):
    return result["final"]["mean_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_acceptance_digits_logreg_100_nodes_200_cycles(seed):
    """The headline numbers. Seed 1 also checks the local-only floor (the costliest baseline)."""
    base = dict(dataset="digits", model="logreg", nodes=100, cycles=200, seed=seed)
    baselines = ("centralised", "local") if seed == 1 else ("centralised",)
    iid = simulate(SimulationConfig(split="iid", baselines=baselines, **base))
    labels = simulate(SimulationConfig(split="labels", **base))
    full = simulate(SimulationConfig(split="iid", sampler="full", **base))

    problems = []
    if not _final(iid) >= 0.93:
        problems.append(f"iid gossip {_final(iid):.4f} < 0.93")
    if not _final(labels) >= 0.90:
        problems.append(f"labels gossip {_final(labels):.4f} < 0.90")
    cen = iid["baselines"]["centralised"]["accuracy"]
    if not cen >= 0.95:
        problems.append(f"centralised {cen:.4f} < 0.95")
    if "local" in iid["baselines"]:
        loc = iid["baselines"]["local"]["final"]["mean_accuracy"]
        if not loc < _final(iid) - 0.1:
            problems.append(f"local {loc:.4f} not 0.1 below gossip {_final(iid):.4f}")
    if not abs(_final(iid) - _final(full)) <= 0.01:
        problems.append(f"cyclon {_final(iid):.4f} vs full {_final(full):.4f}: more than 1 point apart")
    assert not problems, f"seed {seed}: " + "; ".join(problems)


@pytest.mark.slow
def test_acceptance_cyclon_1000_nodes():
    r = simulate(SimulationConfig(nodes=1000, cycles=100, eval_every=10, seed=1))
    deg = r["final"]["indegree"]
    assert deg["mean"] > 0.8 * r["config"]["view_size"]
    assert deg["std"] / deg["mean"] <= 0.3
    after_bootstrap = [e for e in r["series"] if e["cycle"] >= 10]
    assert len(after_bootstrap) == 10
    assert all(e["largest_component_fraction"] == 1.0 for e in after_bootstrap)
    assert all(e["dead_link_fraction"] == 0.0 for e in r["series"])
    assert _final(r) > 0.9


@pytest.mark.slow
def test_acceptance_cyclon_heals_after_half_the_nodes_crash():
    """1000 nodes, c = 20, --kill 0.5@50: dead links < 1% within 3c cycles, gone within 5c,
    and the live overlay stays one component throughout."""
    c = 20
    r = simulate(SimulationConfig(nodes=1000, cycles=150, view_size=c, kill="0.5@50", eval_every=5, seed=1))
    after = [e for e in r["series"] if e["cycle"] > 50]
    assert after[0]["dead_link_fraction"] > 0.3  # the crash did cut half of the links
    below = [e["cycle"] for e in after if e["dead_link_fraction"] < 0.01]
    assert below and below[0] - 50 <= 3 * c, below[:1]
    zero_from = next(e["cycle"] for e in after if all(x["dead_link_fraction"] == 0 for x in after
                                                      if x["cycle"] >= e["cycle"]))
    assert zero_from - 50 <= 5 * c
    assert all(e["largest_component_fraction"] == 1.0 for e in r["series"] if e["cycle"] >= 5)
    assert r["final"]["live_nodes"] == 500


# ------------------------------------------------------------------ attackers


def test_attackers_are_left_out_of_the_measurements(digits):
    r, sim = run(digits, nodes=40, cycles=20, attackers="0.25:signflip", eval_every=10)
    assert r["honest_nodes"] == int(sim.honest.sum()) == 30
    honest = [sim.nodes[i] for i in np.flatnonzero(sim.honest)]
    accs = sim.learner.evaluate_many([n.state for n in honest], digits.X_test, digits.y_test,
                                     [n.stats for n in honest])
    assert r["final"]["mean_accuracy"] == pytest.approx(float(accs.mean()))
    assert r["final"]["min_accuracy"] == pytest.approx(float(accs.min()))
    # the attackers keep sampling like everyone else: a quarter of the views
    assert all(0.15 < e["attacker_view_share"] < 0.35 for e in r["series"][1:])
    assert r["final"]["counters"]["sent"] == sum(sim.nodes[i].counters.sent for i in np.flatnonzero(sim.honest))
    again, _ = run(digits, nodes=40, cycles=20, attackers="0.25:signflip", eval_every=10)
    assert again["series"] == r["series"]


def test_the_age_attack_takes_over_the_age_merge_and_not_the_robust_one(digits):
    kw = dict(nodes=40, cycles=40, attackers="0.2:age", eval_every=40, seed=2)
    age, _ = run(digits, merge="age", **kw)
    robust, _ = run(digits, **kw)
    assert age["final"]["mean_accuracy"] < 0.2  # every honest model replaced, and its age with it
    assert age["final"]["mean_age"] > 1e299
    assert robust["final"]["mean_accuracy"] > 0.85
    assert robust["final"]["mean_age"] < 1e5  # the claimed age did not spread


# ------------------------------------------------------------------ cuts


@ENGINES
@pytest.mark.parametrize("reseed", [None, math.inf])
def test_a_long_cut_heals_by_reseeding_and_only_by_it(digits, reseed, engine):
    """20 nodes cut 10 | 10 for 60 cycles: the sides forget each other; only the
    default reseeding (every 5 shuffle periods) brings them back together."""
    r, sim = run(digits, engine, nodes=20, cycles=90, cut="0.5@10-70", eval_every=2, reseed_interval=reseed)
    by = {e["cycle"]: e for e in r["series"]}
    assert by[8]["largest_component_fraction"] == 1.0 and not by[8]["cut_active"]
    assert all(by[c]["largest_component_fraction"] == 0.5 and by[c]["cut_active"] for c in range(10, 70, 2))
    assert by[68]["cut_links"] == 0  # no view points across any more
    after = [by[c]["largest_component_fraction"] for c in range(70, 91, 2)]
    if reseed is None:
        assert after.index(1.0) <= 5 and after[-1] == 1.0  # one component within 10 cycles
    else:
        assert max(after) == 0.5
    t = totals(sim)
    assert t["timeouts"] > 0 and t["send_failures"] == t["timeouts"]  # a cut is silence, not a refusal


def test_cut_validation():
    with pytest.raises(ConfigError) as exc:
        SimulationConfig(cut="0.5@80-50").validate()
    assert exc.value.field == "cut"
    with pytest.raises(ConfigError) as exc:
        SimulationConfig(reseed_interval=0.0).validate()
    assert exc.value.field == "reseed_interval"


# ------------------------------------------------------------------ acceptance of issue 10 (slow)


@pytest.mark.slow
def test_acceptance_attackers_seed_1(digits):
    """digits/logreg, 100 nodes, 200 cycles, iid, seed 1 (bench/attacks.py prints seeds 1-3):
    20% attackers of every kind leave the default merge within 3 points of no attack;
    the age attack collapses the age merge; without attackers robust is within 0.5 of age."""
    base = dict(nodes=100, cycles=200, seed=1, eval_every=200)

    def acc(**kw) -> float:
        return run(digits, **base, **kw)[0]["final"]["mean_accuracy"]

    clean = acc()
    problems = []
    if abs(clean - acc(merge="age")) > 0.005:
        problems.append("no attack: robust and age more than 0.5 points apart")
    for kind in ("age", "scale:10", "signflip", "noise:1", "zero", "stats"):
        attacked = acc(attackers=f"0.2:{kind}")
        if attacked < clean - 0.03:
            problems.append(f"{kind}: {attacked:.4f} vs {clean:.4f} without attackers")
    collapsed = acc(merge="age", attackers="0.2:age")
    if collapsed > 0.2:
        problems.append(f"age merge under the age attack kept {collapsed:.4f}: the test does not bite")
    assert not problems, "; ".join(problems)


@pytest.mark.slow
def test_acceptance_cut_1000_nodes_heals_within_20_cycles(digits):
    r, _ = run(digits, "batched", nodes=1000, cycles=100, cut="0.5@50-80", eval_every=2, seed=1)
    by = {e["cycle"]: e for e in r["series"]}
    assert by[48]["largest_component_fraction"] == 1.0
    assert all(by[c]["largest_component_fraction"] <= 0.5 for c in range(50, 80, 2))  # really split
    healed = [c for c in range(80, 101, 2) if by[c]["largest_component_fraction"] == 1.0]
    assert healed and healed[0] - 80 <= 20, healed
    assert all(by[c]["largest_component_fraction"] == 1.0 for c in range(healed[0], 101, 2))
