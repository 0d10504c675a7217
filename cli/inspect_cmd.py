"""``gossip status | peers | join | export``: look at and steer running daemons.

Each command prints a rich table, or with ``--json`` one JSON document on
stdout. Failures are one line (``cli.client`` errors): exit 2 for bad input,
1 when a node cannot be reached or is not a gossipd.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.client import TOKEN_ENV, Client, CommandFailed, DaemonError, NotGossipd, Unreachable, admin_token, check_url, run
from cli.errors import UserError
from gossipd.files import atomic_write

TIMEOUT_HELP = "seconds to wait for the node's answer"


def url_argument(name: str = "url") -> Any:
    return click.argument(name, metavar=name.upper(), callback=lambda ctx, p, v: None if v is None else
                          check_url(v, p.human_readable_name))


def token_option(command: Any) -> Any:
    return click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help=f"file holding the node's admin token (default: ${TOKEN_ENV})")(command)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def console() -> Console:
    # Wide enough that URLs are not folded when stdout is not a terminal (pipes, tests).
    return Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)


# -- formatting -------------------------------------------------------------------


def fmt_age(age: Any) -> str:
    if age is None:
        return "-"
    age = float(age)
    return f"{age:,.0f}" if age == int(age) else f"{age:,.1f}"


def fmt_acc(acc: Any) -> str:
    return "-" if acc is None or (isinstance(acc, float) and math.isnan(acc)) else f"{float(acc):.4f}"


def fmt_duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def fmt_when(at: Any) -> str:
    if not isinstance(at, (int, float)):
        return "never"
    ago = max(0.0, time.time() - float(at))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return f"{stamp} ({fmt_duration(ago)} ago)"


def kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2))
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in rows:
        table.add_row(escape(k), escape(v))
    return table


# -- status -----------------------------------------------------------------------


@click.command(short_help="Show one node: identity, model, accuracy, peers, counters.")
@url_argument()
@click.option("--json", "as_json", is_flag=True, help="print the daemon's status as JSON")
@click.option("--timeout", default=5.0, show_default=True, type=float, help=TIMEOUT_HELP)
def status(url: str, as_json: bool, timeout: float) -> None:
    """Show one node: identity, model, accuracy, peers, counters, uptime.

    \b
    Example:
      gossip status http://127.0.0.1:7070
      gossip status http://10.0.0.5:7070 --json | jq .model.age
    """

    async def fetch() -> dict[str, Any]:
        async with Client(timeout) as c:
            return await c.status(url)

    st = run(fetch())
    if as_json:
        emit_json(st)
        return
    console().print(status_table(url, st))


def fmt_number(value: Any) -> str:
    """4 significant digits (RMSE in the target's own units), '-' when absent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.4g}"


def evaluation_row(model: dict[str, Any], ev: dict[str, Any]) -> tuple[str, str]:
    """("accuracy", "0.9511 on 45 held-out examples, ...") or, for regression,
    ("rmse, r2", "RMSE 54.1, R² 0.452 on ...")."""
    if model.get("task") == "regression":
        label, value = "rmse, r2", ev.get("rmse")
        text = "-" if value is None else f"RMSE {fmt_number(value)}, R² {fmt_number(ev.get('r2'))}"
    else:
        label, value = "accuracy", ev.get("accuracy")
        text = fmt_acc(value)
    if value is not None:
        text += f" on {ev.get('examples', '?')} held-out examples, at {fmt_when(ev.get('at'))}"
        if ev.get("age") is not None:
            text += f", model age {fmt_age(ev.get('age'))}"
    return label, text


def data_row(data: dict[str, Any]) -> str:
    text = (f"{data.get('dataset')} share {data.get('share')} ({data.get('split')} split), "
            f"{data.get('train_examples')} train / {data.get('test_examples')} held out")
    if data.get("following"):
        text += f"; following {data['following']}"
    if data.get("arrived") or data.get("refused"):
        text += f"; {data.get('arrived', 0)} rows arrived, {data.get('refused', 0)} refused"
    return text


def status_table(url: str, st: dict[str, Any]) -> Table:
    model = st.get("model") or {}
    ev = st.get("evaluation") or {}
    counters = st.get("counters") or {}
    data = st.get("data") or {}
    task = f", {model['task']}, scaling {model.get('scaling')}" if model.get("task") else ""
    rows = [
        ("node_id", str(st.get("node_id"))),
        ("advertise", str(st.get("advertise"))),
        ("cluster", str(st.get("cluster"))),
        ("version", f"gossipd {st.get('version')}, protocol v{st.get('protocol')}"),
        ("uptime", fmt_duration(st.get("uptime_s"))),
        ("model", f"{model.get('spec')} ({model.get('params')} params{task}, "
                  f"fingerprint {model.get('fingerprint')})"),
        ("model age", fmt_age(model.get("age"))),
        evaluation_row(model, ev),
        ("peers", str(st.get("peers"))),
        ("counters", ", ".join(f"{k} {v}" for k, v in counters.items()) or "-"),
        ("pending", str(st.get("pending", "-"))),
    ]
    if data:
        rows.append(("data", data_row(data)))
    security = st.get("security")
    if isinstance(security, dict):
        rows.append(("security", security_text(security)))
    return kv_table(f"gossipd node {url}", rows)


def security_text(sec: dict[str, Any]) -> str:
    """'sealed, keys a1.. (sealing), b2..; TLS; refused: stale 2' or 'plain messages (no keyring)'."""
    ids = [str(i) for i in sec.get("key_ids") or []]
    parts = [f"sealed, key{'s' if len(ids) > 1 else ''} " + ", ".join([f"{ids[0]} (sealing)", *ids[1:]])
             if sec.get("sealed") and ids else "plain messages (no keyring)"]
    if sec.get("tls"):
        parts.append("TLS" + (" with client certificates" if sec.get("client_cert_required") else ""))
    rejections = sec.get("rejections") or {}
    parts.append("refused: " + (", ".join(f"{k} {v}" for k, v in rejections.items()) if rejections else "none"))
    if sec.get("dropped_addresses"):
        parts.append(f"dropped addresses {sec['dropped_addresses']}")
    return "; ".join(parts)


# -- peers ------------------------------------------------------------------------


@click.command(short_help="Show a node's peer view and seeds.")
@url_argument()
@click.option("--json", "as_json", is_flag=True, help="print the view and seeds as JSON")
@click.option("--timeout", default=5.0, show_default=True, type=float, help=TIMEOUT_HELP)
def peers(url: str, as_json: bool, timeout: float) -> None:
    """Show a node's peer-sampling view (address, age) and its seeds.

    \b
    Example:
      gossip peers http://127.0.0.1:7070
      gossip peers http://127.0.0.1:7070 --json | jq -r '.peers[].address'
    """

    async def fetch() -> dict[str, Any]:
        async with Client(timeout) as c:
            return await c.peers(url)

    data = run(fetch())
    if as_json:
        emit_json(data)
        return
    n = len(data["peers"])
    out = console()
    out.print(escape(f"view of {data.get('node_id')} at {data.get('advertise', url)}: {n} peer{'' if n == 1 else 's'}"),
              highlight=False)
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("address")
    table.add_column("age", justify="right")
    for i, p in enumerate(data["peers"], 1):
        table.add_row(str(i), p["address"], "-" if p["age"] is None else str(p["age"]))
    out.print(table)
    out.print(escape("seeds: " + (", ".join(data["seeds"]) or "none")), highlight=False)


# -- join -------------------------------------------------------------------------


@click.command(short_help="Ask a node to add a seed peer.")
@url_argument()
@url_argument("peer_url")
@click.option("--json", "as_json", is_flag=True, help="print the daemon's answer as JSON")
@click.option("--timeout", default=5.0, show_default=True, type=float, help=TIMEOUT_HELP)
@token_option
def join(url: str, peer_url: str, as_json: bool, timeout: float, token_file: Path | None) -> None:
    """Ask the node at URL to add PEER_URL as a seed (POST /v1/admin/join).

    Admin calls need the node's admin token (--token-file, or $GOSSIP_ADMIN_TOKEN)
    and are accepted from loopback (or the daemon's admin_allow list) only.

    \b
    Example:
      gossip join http://127.0.0.1:7071 http://127.0.0.1:7070 --token-file /tmp/gossip-b/admin-token
    """
    token = admin_token(token_file)

    async def post() -> dict[str, Any]:
        async with Client(timeout, token=token) as c:
            return await c.join(url, peer_url)

    answer = run(post())
    if as_json:
        emit_json(answer)
        return
    joined = answer.get("joined", peer_url)
    n = answer.get("peers", "?")
    console().print(escape(f"{url} accepted {joined} as a seed; its view holds {n} peer{'' if n == 1 else 's'}"),
                    highlight=False)


# -- wait -------------------------------------------------------------------------


@click.command(short_help="Wait until a node serves (or, with --ready, knows a peer).")
@url_argument()
@click.option("--ready", is_flag=True, help="wait for /readyz: model loaded and at least one peer known")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="seconds to wait in all")
def wait(url: str, ready: bool, timeout: float) -> None:
    """Wait until the node at URL serves its API: for scripts, instead of sleep.

    Polls every 0.2 s until GET /v1/status answers (the model is loaded), or
    with --ready until GET /readyz says ready. Exit 0 then, with one line;
    exit 1 after --timeout seconds, or at once if URL is not a gossipd.

    \b
    Example:
      gossipd --listen 127.0.0.1:7070 --state-dir /tmp/a & gossip wait http://127.0.0.1:7070
      gossip wait http://127.0.0.1:7071 --ready --timeout 30 && gossip crawl http://127.0.0.1:7071
    """
    st = run(_wait(url, ready, timeout))
    what = "ready" if ready else "up"
    console().print(escape(f"{url} is {what}: node {st.get('node_id')}, model age {fmt_age(st['model'].get('age'))}, "
                           f"{st.get('peers')} peer{'' if st.get('peers') == 1 else 's'}"), highlight=False)


async def _wait(url: str, ready: bool, timeout: float) -> dict[str, Any]:
    import asyncio

    deadline = time.monotonic() + timeout
    reason = "no answer yet"
    async with Client(min(2.0, timeout)) as c:
        while True:
            try:
                if ready:
                    code, _, _ = await c.request("GET", url, "/readyz")
                    if code not in (200, 503):
                        raise NotGossipd(f"{url} is not a gossipd node (GET /readyz answered HTTP {code})")
                    if code == 503:
                        raise DaemonError(f"{url} is not ready yet", 503, "not_ready")
                return await c.status(url)
            except (Unreachable, DaemonError) as exc:
                if isinstance(exc, DaemonError) and exc.status != 503:
                    raise
                reason = str(exc)
            if time.monotonic() + 0.2 > deadline:
                raise CommandFailed(f"{url} not {'ready' if ready else 'up'} after {timeout:g} s ({reason})")
            await asyncio.sleep(0.2)


# -- export -----------------------------------------------------------------------


@click.command(short_help="Write a node's model as ONNX (from a URL or a state dir).")
@click.argument("url", metavar="[URL]", required=False,
                callback=lambda ctx, p, v: None if v is None else check_url(v, "URL"))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX file to write")
@click.option("--state-dir", type=click.Path(path_type=Path),
              help="export offline from this daemon state directory instead of a URL")
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON")
@click.option("--timeout", default=30.0, show_default=True, type=float, help=TIMEOUT_HELP)
@token_option
def export(url: str | None, output: Path, state_dir: Path | None, as_json: bool, timeout: float,
           token_file: Path | None) -> None:
    """Write a node's current model as ONNX, from a running node or offline.

    Give exactly one of URL (download from a running daemon, which needs its
    admin token: --token-file or $GOSSIP_ADMIN_TOKEN) or --state-dir (read the
    checkpoint of a stopped daemon). The file is checked with onnxruntime
    before it is reported.

    \b
    Example:
      gossip export http://127.0.0.1:7070 -o model.onnx --token-file /tmp/gossip-a/admin-token
      gossip export --state-dir /var/lib/gossipd -o model.onnx
    """
    if (url is None) == (state_dir is None):
        raise UserError("give exactly one of URL or --state-dir "
                        + ("(not both)" if url else "(neither was given)"))
    if output.exists() and output.is_dir():
        raise UserError(f"-o/--output: {output} is a directory")
    if not output.parent.is_dir() and str(output.parent) not in ("", "."):
        raise UserError(f"-o/--output: directory {output.parent} does not exist")
    if url is not None:
        report = _export_online(url, output, timeout, admin_token(token_file))
    else:
        assert state_dir is not None
        report = _export_offline(state_dir, output)
    if as_json:
        emit_json(report)
        return
    rows = [("path", str(report["path"])), ("bytes", f"{report['bytes']:,}"),
            ("source", report["source"]), ("node_id", str(report.get("node_id"))),
            ("model", f"{report.get('spec')} (fingerprint {report.get('fingerprint')})"),
            ("model age", fmt_age(report.get("age"))),
            ("task", str(report.get("task"))),
            ("input", "; ".join(_io(v) for v in report["signature"]["inputs"])),
            ("outputs", "; ".join(_io(v) for v in report["signature"]["outputs"])),
            ("onnxruntime", report["check"])]
    console().print(kv_table("exported model", rows))


def _verify_onnx(data: bytes, what: str) -> tuple[dict[str, str], str, dict[str, Any]]:
    """Load the model with onnxruntime, run it once on two rows of zeros;
    (metadata, one-line check summary, input/output signature)."""
    import numpy as np

    from gossipd.export import read_metadata, run_onnx, signature, signature_text

    try:
        meta = read_metadata(data)
        sig = signature(data)
        n_features = sig["inputs"][0]["shape"][1]
        if not isinstance(n_features, int) or n_features < 1:
            raise ValueError(f"input {sig['inputs'][0]['name']} has no fixed feature count")
        run_onnx(data, np.zeros((2, n_features), dtype=np.float32))
    except Exception as exc:  # onnx / onnxruntime raise many unrelated types on a bad file
        raise CommandFailed(f"{what} is not a loadable ONNX model ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]})") from None
    return meta, f"loads; {signature_text(sig)}", sig


def _io(v: dict[str, Any]) -> str:
    return f"{v['name']} {v['type']} [{', '.join(map(str, v['shape']))}]"


def _export_online(url: str, output: Path, timeout: float, token: str | None) -> dict[str, Any]:
    async def fetch() -> tuple[dict[str, Any], bytes]:
        async with Client(timeout, max_bytes=1 << 30, token=token) as c:
            st = await c.status(url)  # proves it is a gossipd of our protocol first
            return st, await c.model_onnx(url)

    st, data = run(fetch())
    meta, check, sig = _verify_onnx(data, f"the model from {url}")
    try:
        atomic_write(output, data, mode=0o644)
    except OSError as exc:
        raise UserError(f"-o/--output: cannot write {output}: {exc.strerror or exc}") from None
    return _report(output, data, meta, source=url, check=check, signature=sig,
                   node_id=meta.get("gossipd.node_id", st["node_id"]))


def _export_offline(state_dir: Path, output: Path) -> dict[str, Any]:
    from gossipd.daemon.store import CheckpointError, Store

    if not state_dir.is_dir():
        raise UserError(f"--state-dir: {state_dir} is not a directory")
    store = Store(state_dir)
    try:
        cp = store.load_any()
    except CheckpointError as exc:
        msg = str(exc)
        if str(state_dir) not in msg:
            msg = f"{store.checkpoint_path}: {msg}"
        raise UserError(f"--state-dir: {msg}") from None
    except OSError as exc:
        raise UserError(f"--state-dir: cannot read {store.checkpoint_path}: {exc.strerror or exc}") from None
    meta = cp.meta
    missing = [k for k in ("spec", "n_features", "n_classes") if k not in meta]
    if missing:
        raise UserError(f"--state-dir: {store.checkpoint_path} lacks the model description "
                        f"({', '.join(missing)}); it was written by an older gossipd")

    from gossipd.export import ExportError, export_onnx
    from gossipd.threads import one_compute_thread

    try:
        learner, stats = _rebuild_learner(meta)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"--state-dir: {store.checkpoint_path}: bad model description ({exc})") from None
    if learner.fingerprint != cp.fingerprint:
        raise UserError(f"--state-dir: {store.checkpoint_path}: model description {learner.spec!r} gives "
                        f"fingerprint {learner.fingerprint}, the checkpoint says {cp.fingerprint}")
    one_compute_thread()  # after the learner: a torch module has loaded torch by now
    check_X, note = _test_share(meta)
    try:
        report = export_onnx(learner, cp.state, output, stats=stats, metadata={"gossipd.node_id": cp.node_id},
                             check_X=check_X)
    except ValueError as exc:
        raise UserError(f"--state-dir: {store.checkpoint_path}: {exc}") from None
    except ExportError as exc:
        raise CommandFailed(f"export failed: {exc}") from None
    except OSError as exc:
        raise UserError(f"-o/--output: cannot write {output}: {exc.strerror or exc}") from None
    data = output.read_bytes()
    meta_onnx, check, sig = _verify_onnx(data, str(output))
    if report.max_abs_diff is not None:
        check += f"; matches torch on {report.n_checked} test rows (max |diff| {report.max_abs_diff:.2g})"
    else:
        check += f"; parity check skipped ({note})"
    return _report(output, data, meta_onnx, source=str(store.checkpoint_path), check=check, node_id=cp.node_id,
                   max_abs_diff=report.max_abs_diff, n_checked=report.n_checked, signature=sig)


def _rebuild_learner(meta: dict[str, Any]) -> tuple[Any, Any]:
    """The learner and scaling statistics a checkpoint's description names."""
    from gossipd.core.learner import make_learner
    from gossipd.core.scaling import FeatureStats, Scaling
    from gossipd.core.spec import Schema

    if meta.get("schema"):
        schema = Schema.from_dict(meta["schema"])
    else:  # written before schemas: a classifier on flat rows
        schema = Schema.classification(int(meta["n_features"]), int(meta["n_classes"]))
    stats = FeatureStats.from_dict(meta["stats"]) if meta.get("stats") else None
    mode = str(meta.get("scaling") or "none")
    scaling = Scaling.fixed(stats) if mode == "fixed" and stats is not None else Scaling(mode)
    return make_learner(str(meta["spec"]), schema, scaling=scaling), stats


def _test_share(meta: dict[str, Any]) -> tuple[Any, str]:
    """The node's test features for the parity check, or (None, why not)."""
    from gossipd.data import DataError, load_dataset, node_share

    # Checkpoints written before the vocabulary change say source/partition.
    name, share = meta.get("dataset", meta.get("source")), meta.get("share", meta.get("partition"))
    if not name or not share or not meta.get("split"):
        return None, "the checkpoint does not name its data"
    schema = meta.get("schema") or {}
    try:
        dataset = load_dataset(str(name), label_column=meta.get("label_column") or None, task=schema.get("task"),
                               input_shape=tuple(schema["input_shape"]) if schema.get("input_shape") else None)
        X_te = node_share(dataset, str(share), str(meta["split"]))[2]
    except (DataError, ValueError, OSError) as exc:
        return None, f"dataset {name!r} not loadable here: {exc}"
    if len(X_te) == 0 or X_te.shape[1] != int(meta["n_features"]):
        return None, "the node's test share is empty or has another shape"
    return X_te, ""


def _report(path: Path, data: bytes, meta: dict[str, str], **extra: Any) -> dict[str, Any]:
    age = meta.get("gossipd.age")
    try:
        age_value: float | None = float(age) if age is not None else None
    except ValueError:
        age_value = None
    return {"path": str(path), "bytes": len(data), "age": age_value,
            "fingerprint": meta.get("gossipd.fingerprint"), "spec": meta.get("gossipd.spec"),
            "task": meta.get("gossipd.task"),
            "version": meta.get("gossipd.version"), "metadata": meta, **extra}
