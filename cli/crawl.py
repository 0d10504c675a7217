"""``gossip crawl``: walk the overlay breadth-first and describe what it finds.

From one node, follow every node's ``/v1/peers`` view, fetching each node's
``/v1/status``, with bounded concurrency, a per-request timeout and a total
deadline. A node named in some view whose status cannot be fetched is
*unreachable*: a finding, not an error (the command still exits 0). Only an
unreachable start node is an error (exit 1).
"""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cli.client import Client, NetworkError, check_url, run
from cli.errors import UserError
from cli.inspect_cmd import console, emit_json, fmt_acc, fmt_age

REACHED = "ok"
UNREACHABLE = "unreachable"


@dataclass
class NodeReport:
    url: str
    state: str = REACHED
    error: str | None = None
    node_id: str | None = None
    age: float | None = None
    accuracy: float | None = None
    accuracy_at: float | None = None
    view: list[str] | None = None  # None: the view could not be read
    seeds: list[str] = field(default_factory=list)
    cluster: str | None = None
    version: str | None = None
    protocol: int | None = None
    uptime_s: float | None = None
    depth: int = 0  # BFS hops from the start node
    reached_as: str | None = None  # the start URL, when it differs from the advertised one
    advertise: str | None = None  # what the node calls itself

    @classmethod
    def from_answers(cls, url: str, depth: int, status: dict[str, Any], peers: dict[str, Any] | None,
                     peers_error: str | None = None) -> NodeReport:
        model = status.get("model") if isinstance(status.get("model"), dict) else {}
        ev = status.get("evaluation") if isinstance(status.get("evaluation"), dict) else {}
        return cls(url=url, node_id=str(status.get("node_id")), age=_num(model.get("age")),
                   accuracy=_num(ev.get("accuracy")), accuracy_at=_num(ev.get("at")),
                   view=[p["address"] for p in peers["peers"]] if peers is not None else None,
                   seeds=list(peers.get("seeds", [])) if peers is not None else [],
                   error=peers_error, cluster=status.get("cluster"), version=status.get("version"),
                   protocol=status.get("protocol"), uptime_s=_num(status.get("uptime_s")), depth=depth,
                   advertise=str(status.get("advertise") or "") or None)

    def as_json(self, in_degree: int | None) -> dict[str, Any]:
        return {"url": self.url, "state": self.state, "error": self.error, "node_id": self.node_id,
                "age": self.age, "accuracy": self.accuracy, "accuracy_at": self.accuracy_at,
                "view_size": None if self.view is None else len(self.view), "view": self.view,
                "in_degree": in_degree, "seeds": self.seeds, "cluster": self.cluster, "version": self.version,
                "protocol": self.protocol, "uptime_s": self.uptime_s, "depth": self.depth,
                **({"reached_as": self.reached_as} if self.reached_as else {})}


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


async def _fetch(c: Client, url: str, depth: int, *, must_reach: bool = False) -> NodeReport:
    """Status and view of one node, concurrently; the status decides reached or unreachable.

    ``must_reach``: raise the status error (a NetworkError) instead of reporting it.
    """
    st, pe = await asyncio.gather(c.status(url), c.peers(url), return_exceptions=True)
    if isinstance(st, BaseException):
        if must_reach or not isinstance(st, NetworkError):
            raise st
        return NodeReport(url=url, state=UNREACHABLE, error=str(st.message), depth=depth)
    if isinstance(pe, BaseException):
        if not isinstance(pe, NetworkError):
            raise pe
        return NodeReport.from_answers(url, depth, st, None, peers_error=f"view not read: {pe.message}")
    return NodeReport.from_answers(url, depth, st, pe)


async def crawl(start: str, *, max_nodes: int = 1000, concurrency: int = 16, timeout: float = 3.0,
                deadline: float = 60.0) -> dict[str, Any]:
    """Breadth-first walk from ``start``; {"nodes", "edges", "summary"} ready for JSON.

    Raises a NetworkError if the start node cannot be read as a gossipd.
    """
    t0 = time.monotonic()
    async with Client(timeout, limit=2 * concurrency) as c:
        first = await _fetch(c, start, 0, must_reach=True)
        advertised = first_address(first, start)
        if advertised != start:
            first.reached_as, first.url = start, advertised
        nodes: dict[str, NodeReport] = {first.url: first}
        order: list[str] = [first.url]  # discovery order, the order nodes are listed in
        known: set[str] = {first.url, start}
        skipped: set[str] = set()  # named in a view but beyond --max-nodes
        sem = asyncio.Semaphore(concurrency)
        tasks: dict[asyncio.Task[NodeReport], str] = {}

        async def visit(url: str, depth: int) -> NodeReport:
            async with sem:
                return await _fetch(c, url, depth)

        def discover(report: NodeReport) -> None:
            for addr in report.view or []:
                if addr in known or addr in skipped:
                    continue
                if len(order) >= max_nodes:
                    skipped.add(addr)
                    continue
                known.add(addr)
                order.append(addr)
                tasks[asyncio.create_task(visit(addr, report.depth + 1))] = addr

        discover(first)
        deadline_hit = False
        while tasks:
            remaining = deadline - (time.monotonic() - t0)
            if remaining <= 0:
                deadline_hit = True
                break
            done, _ = await asyncio.wait(tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                url = tasks.pop(task)
                nodes[url] = task.result()
                discover(nodes[url])
        unfinished = list(tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    order = [u for u in order if u in nodes]
    return assemble(start, order, nodes, elapsed=time.monotonic() - t0, not_visited=len(unfinished) + len(skipped),
                    deadline_hit=deadline_hit, max_nodes_hit=bool(skipped), settings={
                        "max_nodes": max_nodes, "concurrency": concurrency, "timeout": timeout, "deadline": deadline})


def first_address(report: NodeReport, start: str) -> str:
    """The start node's advertised URL when it has a usable one (views name nodes by it)."""
    if report.state != REACHED or not report.advertise:
        return start
    try:
        return check_url(report.advertise, "advertise")
    except UserError:
        return start


def assemble(start: str, order: list[str], nodes: dict[str, NodeReport], *, elapsed: float, not_visited: int,
             deadline_hit: bool, max_nodes_hit: bool, settings: dict[str, Any]) -> dict[str, Any]:
    import numpy as np  # here, not at import: `gossip crawl --help` should answer at once

    from gossipd.overlay import components, indegree_stats

    index = {u: i for i, u in enumerate(order)}
    n = len(order)
    reached = np.array([nodes[u].state == REACHED for u in order], dtype=bool)
    edges: list[tuple[int, int]] = []
    links_out = 0
    for u in order:
        for v in nodes[u].view or []:
            links_out += 1
            if v in index and v != u:
                edges.append((index[u], index[v]))
    indeg = np.zeros(n, dtype=int)
    for a, b in edges:
        if reached[a] and reached[b]:
            indeg[b] += 1
    comps = components(n, edges, reached) if reached.any() else []
    dead_links = sum(1 for a, b in edges if reached[a] and not reached[b])
    accs = [nodes[u].accuracy for u in order if nodes[u].state == REACHED and nodes[u].accuracy is not None]
    ages = [nodes[u].age for u in order if nodes[u].state == REACHED and nodes[u].age is not None]
    clusters = sorted({str(nodes[u].cluster) for u in order if nodes[u].state == REACHED})
    summary = {
        "start": start,
        "nodes_reached": int(reached.sum()),
        "unreachable": int(n - reached.sum()),
        "not_visited": not_visited,
        "complete": not (deadline_hit or max_nodes_hit),
        "deadline_hit": deadline_hit,
        "max_nodes_hit": max_nodes_hit,
        "links": len(edges),
        "dead_links": dead_links,
        "indegree": indegree_stats(n, edges, reached),
        "components": len(comps),
        "component_sizes": comps,
        "accuracy": spread(accs),
        "age": spread(ages),
        "clusters": clusters,
        "elapsed_s": round(elapsed, 3),
        "settings": settings,
    }
    return {
        "nodes": [nodes[u].as_json(int(indeg[i]) if reached[i] else None) for i, u in enumerate(order)],
        "edges": [[order[a], order[b]] for a, b in edges],
        "summary": summary,
    }


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    import numpy as np

    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max())}


# -- output -----------------------------------------------------------------------


def nodes_table(result: dict[str, Any]) -> Table:
    s = result["summary"]
    table = Table(title=f"overlay crawled from {s['start']}: {s['nodes_reached']} reached, "
                        f"{s['unreachable']} unreachable", title_justify="left")
    for col, justify in (("#", "right"), ("url", "left"), ("node_id", "left"), ("state", "left"),
                         ("age", "right"), ("accuracy", "right"), ("view", "right"), ("in", "right")):
        table.add_column(col, justify=justify, no_wrap=col == "url")  # type: ignore[arg-type]
    for i, node in enumerate(result["nodes"], 1):
        if node["state"] == REACHED:
            table.add_row(str(i), node["url"], node["node_id"] or "-", "ok", fmt_age(node["age"]),
                          fmt_acc(node["accuracy"]), "?" if node["view_size"] is None else str(node["view_size"]),
                          str(node["in_degree"]))
        else:
            table.add_row(str(i), node["url"], "-", "[red]unreachable[/red]", "-", "-", "-", "-",
                          style="dim")
    return table


def summary_table(result: dict[str, Any]) -> Table:
    s = result["summary"]
    d = s["indegree"]

    def mean_std(x: dict[str, Any], fmt: Any) -> str:
        if not x["n"]:
            return "-"
        return f"mean {fmt(x['mean'])}, std {fmt(x['std'])} (min {fmt(x['min'])}, max {fmt(x['max'])}, " \
               f"n={x['n']})"

    rows = [
        ("nodes reached", str(s["nodes_reached"])),
        ("unreachable", str(s["unreachable"]) + (f" ({s['dead_links']} links point at them)" if s["unreachable"]
                                                 else "")),
        ("in-degree", f"mean {d['mean']:.2f}, std {d['std']:.2f}, max {d['max']:.0f}"),
        ("components", f"{s['components']}" + (f" (sizes {', '.join(map(str, s['component_sizes']))})"
                                               if s["components"] > 1 else "")),
        ("accuracy", mean_std(s["accuracy"], lambda v: f"{v:.4f}")),
        ("model age", mean_std(s["age"], lambda v: f"{v:,.0f}")),
        ("clusters", ", ".join(s["clusters"]) or "-"),
        ("crawl", f"{s['elapsed_s']:.2f} s" + ("" if s["complete"] else
                  f"; INCOMPLETE: {s['not_visited']} nodes not visited ("
                  + ", ".join(w for w, hit in (("--deadline reached", s["deadline_hit"]),
                                                ("--max-nodes reached", s["max_nodes_hit"])) if hit) + ")")),
    ]
    table = Table(title="overlay summary", show_header=False, title_justify="left", box=None, padding=(0, 2))
    table.add_column("field", style="bold")
    table.add_column("value")
    for k, v in rows:
        table.add_row(k, v)
    return table


def _dot_str(*lines: str) -> str:
    """A DOT double-quoted string; several lines are joined with DOT's \\n."""
    return '"' + "\\n".join(s.replace("\\", "\\\\").replace('"', '\\"') for s in lines) + '"'


def to_dot(result: dict[str, Any]) -> str:
    """The overlay as a Graphviz digraph: one line per node, one per link."""
    lines = ["digraph gossip {", '  node [shape=box, fontname="Helvetica", fontsize=10];']
    for node in result["nodes"]:
        if node["state"] == REACHED:
            label = _dot_str(node["url"], f"age {fmt_age(node['age'])}", f"acc {fmt_acc(node['accuracy'])}")
            attrs = ""
        else:
            label = _dot_str(node["url"], "unreachable")
            attrs = ", style=dashed, color=grey, fontcolor=grey"
        lines.append(f"  {_dot_str(node['url'])} [label={label}{attrs}];")
    for a, b in result["edges"]:
        lines.append(f"  {_dot_str(a)} -> {_dot_str(b)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- the command --------------------------------------------------------------------


def _positive() -> Any:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"--{param.name.replace('_', '-')}: must be > 0, got {value}")  # type: ignore[union-attr]
        return value
    return check


@click.command("crawl", short_help="Walk the overlay; list nodes, in-degree, components, spread.")
@click.argument("url", metavar="URL", callback=lambda ctx, p, v: check_url(v, "URL"))
@click.option("--max-nodes", default=1000, show_default=True, type=int, callback=_positive(),
              help="stop discovering after this many nodes")
@click.option("--concurrency", default=16, show_default=True, type=int, callback=_positive(),
              help="nodes fetched at the same time")
@click.option("--timeout", default=3.0, show_default=True, type=float, callback=_positive(),
              help="seconds per request; a node slower than this counts as unreachable")
@click.option("--deadline", default=60.0, show_default=True, type=float, callback=_positive(),
              help="seconds for the whole crawl; what is found by then is reported")
@click.option("--json", "as_json", is_flag=True, help='print {"nodes", "edges", "summary"} as JSON')
@click.option("--dot", "dot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the overlay as a Graphviz digraph to this file")
def crawl_cmd(url: str, max_nodes: int, concurrency: int, timeout: float, deadline: float, as_json: bool,
              dot_path: Path | None) -> None:
    """Walk the overlay from URL through every node's view; list nodes and summarise.

    Lists every node found (URL, node_id, model age, accuracy, view size,
    in-degree; nodes named in a view that do not answer are marked
    unreachable), then in-degree, connected components and the spread of
    accuracy and model age over the reached nodes. Unreachable nodes are a
    finding, not an error: the exit code is 0 unless URL itself cannot be read.

    \b
    Example:
      gossip crawl http://127.0.0.1:7070
      gossip crawl http://10.0.0.5:7070 --concurrency 32 --deadline 30 --dot overlay.dot
      dot -Tsvg overlay.dot > overlay.svg
    """
    err = Console(stderr=True)
    with err.status(f"crawling from {url}") if sys.stderr.isatty() and not as_json else nullcontext():
        result = run(crawl(url, max_nodes=max_nodes, concurrency=concurrency, timeout=timeout, deadline=deadline))
    if dot_path is not None:
        try:
            dot_path.write_text(to_dot(result))
        except OSError as exc:
            raise UserError(f"--dot: cannot write {dot_path}: {exc.strerror or exc}") from None
    if as_json:
        emit_json(result)
    else:
        out = console()
        out.print(nodes_table(result))
        out.print(summary_table(result))
        if dot_path is not None:
            out.print(f"wrote {dot_path}")
    if not result["summary"]["complete"]:
        err.print(f"warning: crawl incomplete, {result['summary']['not_visited']} nodes not visited "
                  "(raise --deadline or --max-nodes)", highlight=False)
