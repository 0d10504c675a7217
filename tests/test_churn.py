"""Churn traces: the file format, the diurnal generator, and what offline means in the simulator and FedAvg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gossipd.sim.churn import ChurnError, Diurnal, Trace, diurnal_trace, load_trace, make_trace, parse_churn
from gossipd.sim.config import ConfigError, SimulationConfig
from gossipd.sim.simulation import Simulation, simulate


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def test_trace_file_joins_sessions_and_answers_availability(tmp_path: Path) -> None:
    path = write(tmp_path, "online_to,node,online_from,device\n5,0,0,a\n12,0,4,a\n30,1,20,b\n\n3,9,1,z\n")
    trace = load_trace(path, nodes=3)  # node 9 is beyond --nodes: ignored; node 2 has no rows: offline
    assert trace.starts == ((0.0,), (20.0,), ()) and trace.ends == ((12.0,), (30.0,), ())
    assert trace.online(0, 0.0) and trace.online(0, 11.9) and not trace.online(0, 12.0)
    assert not trace.online(1, 19.9) and trace.online(1, 20.0) and not trace.online(2, 5.0)
    assert trace.online_during(0, 2.0, 12.0) and not trace.online_during(1, 19.0, 21.0)
    assert trace.transitions(25.0) == [(12.0, 0, False), (20.0, 1, True)]


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("node,from,to\n1,2,3\n", "line 1: the header lacks online_from, online_to"),
    ("node,online_from,online_to\n0,1\n", "line 2: expected 3 columns"),
    ("node,online_from,online_to\nx,1,2\n", "line 2: node must be an integer"),
    ("node,online_from,online_to\n0,1,2\n0,five,9\n", "line 3: online_from and online_to must be numbers"),
    ("node,online_from,online_to\n0,4,2\n", "line 2: need node >= 0 and 0 <= online_from < online_to"),
])
def test_trace_file_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ChurnError) as info:
        load_trace(path, 5)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_diurnal_is_seeded_and_follows_its_online_share() -> None:
    flat = Diurnal(online=0.3, swing=0.0, session=5.0)
    trace = diurnal_trace(flat, 400, 200.0, np.random.default_rng(7))
    shares = [trace.fraction_online(t) for t in range(20, 200, 10)]
    assert abs(np.mean(shares) - 0.3) < 0.05
    lengths = [b - a for s, e in zip(trace.starts, trace.ends) for a, b in zip(s, e) if b < 200.0]
    assert abs(np.mean(lengths) - 5.0) < 0.6  # sessions of mean `session`
    # p(25) = 0.76, p(75) = 0.04; the share lags p by about a session, so short sessions follow it closely.
    day = Diurnal(day=100.0, online=0.4, swing=0.9, spread=0.0, session=2.0)
    wave = diurnal_trace(day, 400, 100.0, np.random.default_rng(7))
    assert wave.fraction_online(25.0) > 0.6 > 0.15 > wave.fraction_online(75.0)  # the peak, then the night
    assert make_trace("diurnal:session=4", 50, 100.0, seed=3) == make_trace("diurnal:session=4", 50, 100.0, seed=3)
    assert make_trace("diurnal:session=4", 50, 100.0, seed=3) != make_trace("diurnal:session=4", 50, 100.0, seed=4)


@pytest.mark.parametrize("spec, message", [
    ("diurnal:day=0", "day must be > 0"),
    ("diurnal:online=1.5", "online must be in (0, 1)"),
    ("diurnal:sesion=3", "KEY one of day, online, swing, session, spread"),
    ("diurnal:swing=x", "swing must be a number"),
    ("no/such/trace.csv", "no such trace file"),
])
def test_churn_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(ChurnError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_churn(spec)
    with pytest.raises(ConfigError) as info:
        SimulationConfig(churn=spec).validate()
    assert info.value.field == "churn" and str(info.value).startswith("--churn: ")


def test_churn_and_online_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="--churn replaces --online"):
        SimulationConfig(churn="diurnal", online=0.5).validate()


def test_offline_nodes_neither_send_nor_receive_and_senders_see_refusals(tmp_path: Path) -> None:
    # 12 nodes on a full graph: node 0 is never online, node 1 only from cycle 10, the rest always.
    rows = "".join(f"{i},0,1000\n" for i in range(2, 12))
    path = write(tmp_path, f"node,online_from,online_to\n1,10,1000\n{rows}")
    sim = Simulation.create(SimulationConfig(nodes=12, cycles=20, eval_every=10, sampler="full", churn=str(path),
                                             seed=5))
    result = sim.run()
    never, late = sim.nodes[0].counters, sim.nodes[1].counters
    assert never.sent == 0 and never.received == 0 and sim.nodes[0].state.age == 0
    assert 0 < late.sent <= 12  # about one push a cycle once it is up
    assert late.received > 0
    # Pushes to node 0 (and to node 1 before cycle 10) were refused: the senders counted them.
    failures = sum(n.counters.send_failures for n in sim.nodes[2:])
    assert failures >= 10
    assert result["final"]["mean_accuracy"] > result["series"][0]["mean_accuracy"]


def test_the_batched_engine_replays_a_trace_too(tmp_path: Path) -> None:
    """The same 12-node trace as above, on the batched engine (auto picks it): node 0 never
    sends nor merges, node 1 only once its session starts at cycle 10, and pushes to them are
    refused; FedAvg sees the same trace and data as under the exact engine, so its series is
    the exact engine's."""
    rows = "".join(f"{i},0,1000\n" for i in range(2, 12))
    path = write(tmp_path, f"node,online_from,online_to\n1,10,1000\n{rows}")
    cfg = dict(nodes=12, cycles=20, eval_every=10, sampler="full", churn=str(path), seed=5, baselines=("fedavg",))
    result = simulate(SimulationConfig(**cfg))
    assert result["engine"]["name"] == "batched"
    from gossipd.sim.batched import BatchedSimulation

    sim = BatchedSimulation.create(SimulationConfig(**cfg))
    sim.run()
    sent, merged, failures = sim.counters["sent"], sim.counters["merged"], sim.counters["send_failures"]
    assert sent[0] == 0 and merged[0] == 0 and sim.models.age[0] == 0
    assert 0 < sent[1] <= 12 and merged[1] > 0  # about one push a cycle once it is up
    assert failures[2:].sum() >= 10
    exact = simulate(SimulationConfig(**dict(cfg, engine="exact")))
    assert result["baselines"]["fedavg"]["series"] == exact["baselines"]["fedavg"]["series"]


def test_trace_arrays_answer_as_the_trace_does(tmp_path: Path) -> None:
    """TraceArrays (the batched engine's form) against Trace's bisects, node by node: online at
    a time, and when a node next comes online (inf: never), for a file with gaps, a node
    without sessions and times past the last end, and for a diurnal trace."""
    path = write(tmp_path, "node,online_from,online_to\n0,0,5\n0,4,12\n0,20,30\n2,1.5,2\n3,0,100\n")
    rng = np.random.default_rng(3)
    for trace in (load_trace(path, nodes=5), make_trace("diurnal", 40, 200.0, 9)):
        arrays = trace.arrays()
        nodes = rng.integers(0, trace.nodes, 3000)
        t = np.concatenate([rng.uniform(0, 220, 2990), [0.0, 1.5, 2.0, 4.0, 12.0, 20.0, 30.0, 100.0, 5.0, 0.0]])
        nodes[-10:] = [0, 2, 2, 0, 0, 0, 0, 3, 1, 4]
        want_online = [trace.online(int(i), float(x)) for i, x in zip(nodes, t)]
        want_next = [min((a for a in trace.starts[int(i)] if a > x), default=np.inf) for i, x in zip(nodes, t)]
        assert arrays.online(nodes, t).tolist() == want_online
        assert arrays.next_start(nodes, t).tolist() == want_next
    assert not Trace(((), ()), ((), ())).arrays().online(np.array([0, 1]), 3.0).any()


def test_fedavg_takes_only_clients_online_for_the_whole_round(tmp_path: Path) -> None:
    # 10 clients; 0-4 online throughout, 5-9 only for [0, 2.5): they take part in rounds 1 and 2 only.
    rows = "".join(f"{i},0,100\n" for i in range(5)) + "".join(f"{i},0,2.5\n" for i in range(5, 10))
    path = write(tmp_path, f"node,online_from,online_to\n{rows}")
    result = simulate(SimulationConfig(nodes=10, cycles=5, eval_every=1, churn=str(path), gossip=False,
                                       baselines=("fedavg",), seed=2))
    messages = [e["messages"] for e in result["baselines"]["fedavg"]["series"]]
    assert np.diff(messages).tolist() == [20, 20, 10, 10, 10]  # two transfers per participant


def test_trace_equality_is_by_value() -> None:
    assert Trace(((0.0,),), ((1.0,),)) == Trace.from_sessions(1, [[(0.0, 0.5), (0.4, 1.0)]])
