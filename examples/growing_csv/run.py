"""Data that keeps arriving: two daemons follow their own growing CSV directories.

One command (from the repository root)::

    python examples/growing_csv/run.py

Each daemon is told ``--dataset DIR``: a directory of CSV files (a header,
the features, a ``label`` column) that starts with a few rows of digits per
class. While the two daemons gossip, a writer keeps adding rows, the two ways
a device's data grows: complete lines appended to ``rows.csv``, and whole new
files (written as ``.batch-N.csv.part``, then renamed, so a daemon never reads
half a file). Each daemon notices them within ``data.poll_interval`` (1 s),
trains on them at once (its model's age rises by their number) and holds a
quarter out to score the model; no restart. Every second the script prints
what each node holds and its accuracy on what it holds out, then a JSON
summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from gossipd.data import load_raw  # noqa: E402
from gossipd.testing import DaemonProc, stop_all  # noqa: E402


def status(url: str) -> dict:
    with urllib.request.urlopen(url + "/v1/status", timeout=5) as resp:
        return json.loads(resp.read())


def csv_lines(X: np.ndarray, y: np.ndarray) -> str:
    return "".join(",".join(str(int(v)) for v in row) + f",{label}\n" for row, label in zip(X, y))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("growing-csv-demo"))
    ap.add_argument("--seconds", type=int, default=30, help="how long the writer keeps adding rows")
    ap.add_argument("--rate", type=int, default=20, help="rows per second per node")
    ap.add_argument("--initial", type=int, default=4, help="rows per class each node starts with")
    ap.add_argument("--gossip-interval", type=float, default=0.5)
    args = ap.parse_args(argv)

    ex = load_raw("digits")
    X, y = ex.X.astype(int), np.asarray(ex.y)
    order = np.random.default_rng(0).permutation(len(y))
    header = ",".join(ex.feature_names) + ",label\n"
    shutil.rmtree(args.workdir, ignore_errors=True)
    dirs = [args.workdir / "node-a", args.workdir / "node-b"]
    streams = []
    for k, d in enumerate(dirs):
        d.mkdir(parents=True)
        mine = order[k::2]
        start = np.concatenate([mine[y[mine] == c][: args.initial] for c in range(10)])
        rest = np.setdiff1d(mine, start, assume_unique=True)
        (d / "rows.csv").write_text(header + csv_lines(X[start], y[start]))
        streams.append(list(rest))

    common = ["--model", "logreg", "--gossip-interval", str(args.gossip_interval), "--shuffle-interval", "1",
              "--log-level", "WARNING", "--seed", "1"]
    first = DaemonProc(args.workdir / "state-a", ["--dataset", str(dirs[0]), *common]).start()
    procs = [first]
    try:
        seed_url = first.wait_listening()
        procs.append(DaemonProc(args.workdir / "state-b", ["--dataset", str(dirs[1]), "--join", seed_url,
                                                           *common]).start())
        urls = [p.wait_ready() for p in procs]
        begin = [status(u) for u in urls]
        written = [0, 0]
        print(" t   node  train  held out  arrived   model age  accuracy")
        for t in range(1, args.seconds + 1):
            for k, d in enumerate(dirs):
                take, streams[k] = streams[k][: args.rate], streams[k][args.rate:]
                if not take:
                    continue
                if t % 5 == 0:  # a whole new file, renamed into place once written
                    part = d / f".batch-{t}.csv.part"
                    part.write_text(header + csv_lines(X[take], y[take]))
                    part.rename(d / f"batch-{t}.csv")
                else:  # complete lines appended to the file the daemon already follows
                    with (d / "rows.csv").open("a") as fh:
                        fh.write(csv_lines(X[take], y[take]))
                written[k] += len(take)
            time.sleep(1.0)
            for name, url in zip("ab", urls):
                st = status(url)
                data, ev = st["data"], st["evaluation"]
                acc = "-" if ev.get("accuracy") is None else f"{ev['accuracy']:.3f}"
                print(f"{t:2d}   {name}    {data['train_examples']:5d}  {data['test_examples']:8d}  "
                      f"{data['arrived']:7d}  {st['model']['age']:10.0f}  {acc}")
        time.sleep(2.5)  # the last rows: one poll, one evaluation
        end = [status(u) for u in urls]
    finally:
        stop_all(procs)
    summary = {
        "written": written,
        "arrived": [st["data"]["arrived"] for st in end],
        "train_examples": [[b["data"]["train_examples"], e["data"]["train_examples"]] for b, e in zip(begin, end)],
        "age": [[b["model"]["age"], e["model"]["age"]] for b, e in zip(begin, end)],
        "accuracy": [[b["evaluation"]["accuracy"], e["evaluation"]["accuracy"]] for b, e in zip(begin, end)],
        "merged": [st["counters"]["merged"] for st in end],
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
