"""gossipd: the asyncio driver of one GossipNode on the wall clock and HTTP.

The same GossipNode and Cyclon sampler the simulator drives; this module only
adds time (``loop.time()``), transport (aiohttp), a trainer thread, checkpoints,
signals and sd_notify.

Start-up binds the port first and loads the data and the model after (torch
only for a torch-module model), in a worker thread: ``/healthz`` answers within a second of exec, everything
else says 503 ``starting`` until the node exists. Shutdown writes the final
checkpoint last; ``run`` then ends the process without the interpreter's
teardown (which spends seconds unloading torch).

Every peer message goes through one :class:`~gossipd.daemon.gate.PeerGate`
(sealed with the keyring when there is one, addresses screened, refusals
counted); the listening socket through a
:class:`~gossipd.daemon.server.ConnectionGuard` (connection cap, header
timeout). SIGHUP re-reads the keyring and the admin token.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gossipd import wire
from gossipd.addresses import AddressError, PeerPolicy, parse_address
from gossipd.core.scaling import FeatureStats
from gossipd.core.messages import Message, ModelMessage, Send, ShuffleReply, ShuffleRequest
from gossipd.core.node import GossipNode
from gossipd.core.state import ModelState
from gossipd.daemon import credentials
from gossipd.daemon.config import NodeConfig, is_loopback
from gossipd.daemon.gate import PeerGate
from gossipd.daemon.http import Api, NotExportable, PeerClient, PeerError, ip_allowed
from gossipd.daemon.metrics import Metrics, MetricsSnapshot
from gossipd.daemon.server import ConnectionGuard, GuardedSite, ServerLimits, fd_limit
from gossipd.daemon.sdnotify import Notifier
from gossipd.daemon.store import Checkpoint, Store, atomic_write
from gossipd.daemon.datafeed import DataFeed, rows_of
from gossipd.data import DataError, make_scaling
from gossipd.envelope import PeerCodec
from gossipd.logsummary import LogSummary
from gossipd.security import Keyring, ReplayGuard
from gossipd.version import VERSION
from peer_sampling.cyclon import Cyclon

log = logging.getLogger("gossipd")

# At most one line about view changes per this many seconds (Cyclon swaps entries every shuffle).
VIEW_LOG_INTERVAL = 10.0


class StartupError(RuntimeError):
    """The daemon cannot start; the message is the one line to print."""


class Daemon:
    """One node on the wall clock; implements the HTTP API's ``NodeService``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store = Store(config.state_dir)
        self.started = time.monotonic()
        self.pending = 0
        # Until the learner exists the size limit is unknown; peer messages get 503 "starting" anyway.
        self.max_body = 1 << 20
        self.evaluation: dict[str, Any] = {"accuracy": None, "at": None}
        self.notifier = Notifier.from_env()
        self._trainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gossipd-train")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._saved_marker: tuple[float, int] | None = None
        # Set in start(); until then the HTTP side answers 503 "starting".
        self.node: GossipNode | None = None
        self.sampler: Cyclon = None  # type: ignore[assignment]
        self.address = ""
        self.node_id = ""
        self._runner: Any = None
        self.api: Api | None = None
        self.client: PeerClient | None = None
        # Failures and refusals of our own messages: one line per peer and reason, then counts.
        self.unreachable = LogSummary(log, "cannot reach", level=logging.INFO)
        self.refused = LogSummary(log, "refused by")
        self.bad_rows = LogSummary(log, "rows not taken from")
        # (model, its scaling statistics): set by _publish in the trainer thread, read anywhere.
        self.current: tuple[ModelState, FeatureStats | None] = None  # type: ignore[assignment]
        self._evaluated: tuple[float, int] | None = None
        self._logged_view: set[str] = set()
        self._view_logged_at = -math.inf
        self._left_why: dict[str, str] = {}
        self.body_timeout = config.body_timeout
        self.policy = PeerPolicy.from_cidrs(config.security.peer_allow)
        self.keyring: Keyring | None = None
        self._admin_token = ""
        self.gate: PeerGate | None = None  # with the learner: the codec checks architecture and size
        self.guard = ConnectionGuard(ServerLimits(config.max_connections, config.header_timeout),
                                     report=self._report_http_error)
        # Refused connections and requests aiohttp could not parse, dropped shuffle entries:
        # one line per kind and client at once, then a count at most once a minute.
        self.http_errors = LogSummary(log, "HTTP")
        self.dropped = LogSummary(log, "dropped")

    # -- start-up ---------------------------------------------------------------

    def _load_data(self) -> None:
        """Data set, share and learner, off the loop: a torch module imports torch (seconds);
        a built-in model needs numpy only."""
        from gossipd.core.learner import make_learner
        from gossipd.threads import one_compute_thread

        cfg = self.config
        data = cfg.data
        try:
            self.feed = DataFeed.load(
                data.dataset, share=data.share, split=data.split, label_column=data.label_column, task=data.task,
                input_shape=data.input_shape, max_examples=data.max_examples, test_share=data.test_share,
                follow=math.isfinite(data.poll_interval), rng=np.random.default_rng(self._data_seed()))
        except (DataError, ValueError) as exc:
            raise StartupError(f"data.dataset: {exc}") from None
        try:
            scaling = make_scaling(cfg.model.scaling, self.feed.schema)
        except (DataError, ValueError) as exc:
            raise StartupError(f"model.scaling: {exc}") from None
        try:
            self.learner = make_learner(cfg.model.spec, self.feed.schema, cfg.model.learner, scaling=scaling)
        except ValueError as exc:
            raise StartupError(f"model.spec: {exc}") from None
        # One compute thread (BLAS, and torch if the model loaded it): several daemons often
        # share a machine, and workers spinning against each other cost more than they give.
        one_compute_thread()
        self.max_body = wire.max_body_bytes(self.learner.n_params)

    def _data_seed(self) -> int | None:
        """The store's held-out draws: reproducible with ``seed``, else random."""
        return None if self.config.seed < 0 else self.config.seed + 1

    async def start(self) -> None:
        """Bind, then load data and model off the loop, then build the node and start its timers."""
        loop = asyncio.get_running_loop()
        try:
            self.store.ensure()
            self.node_id = self.store.node_id(self.config.node_id)
        except OSError as exc:
            raise StartupError(f"state_dir: cannot use {self.config.state_dir}: {exc.strerror or exc}") from None
        server_ssl, client_ssl = self._load_secrets()  # a bad key or certificate stops us before we listen
        await self._bind(server_ssl)
        # Where this daemon can be reached, for tools started with --state-dir (and tests on port 0).
        atomic_write(self.store.dir / "endpoint", (self.address + "\n").encode())
        self.notifier.status(f"listening on {self.address}; loading data and model")
        await loop.run_in_executor(None, self._load_data)
        if self._stopping.is_set():
            return
        self._build_gate()
        self._build_node(loop.time())
        self.client = PeerClient(self.config.request_timeout, self.max_body, self.policy, client_ssl)
        await loop.run_in_executor(self._trainer, self._evaluate)
        for coro in (self._timer_loop(), self._checkpoint_loop(), self._watchdog_loop(), self._eval_loop(),
                     self._log_loop()):
            self._spawn(coro)
        if self.feed.tail is not None:
            self._spawn(self._data_loop())
        # Everything loaded so far (torch, scikit-learn, the data: millions of objects) lives as long as
        # the process: keep it out of the cyclic garbage collector, whose full passes over it stalled
        # the event loop for hundreds of milliseconds under a connection flood.
        gc.freeze()
        self.notifier.ready(f"serving {self.address}, model age {self.node.state.age:g}")
        log.info("node %s serving: cluster %s, model %s (%s, %d params, age %g), dataset %s share %s (%s split), "
                 "%d peers", self.node_id, self.config.cluster, self.learner.spec, self.learner.fingerprint,
                 self.learner.n_params, self.node.state.age, self.config.data.dataset, self.config.data.share,
                 self.config.data.split, len(self.sampler.peers()))

    async def _bind(self, server_ssl: Any) -> None:
        from aiohttp import web

        host, port = self.config.host_port
        self.metrics = Metrics(self.metrics_snapshot)
        limits = self.guard.limits.within_fd_limit(fd_limit())
        if limits != self.guard.limits:
            log.warning("max_connections %d does not fit the file descriptor limit (ulimit -n %s); serving at "
                        "most %d connections (raise LimitNOFILE= to serve more)", self.guard.limits.max_connections,
                        fd_limit(), limits.max_connections)
            self.guard.limits = limits
        # shutdown_timeout: grace for handlers in flight at SIGTERM (a merge takes milliseconds).
        self.api = Api(self)
        self._runner = web.AppRunner(self.api.app(middlewares=(self.guard.middleware,)), access_log=None,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = GuardedSite(self._runner, self.guard, host, port, ssl_context=server_ssl)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise StartupError(f"listen: cannot bind {self.config.listen}: {exc.strerror or exc}") from None
        bound_port = self._runner.addresses[0][1]  # the real port when listening on port 0
        scheme = "https" if server_ssl is not None else "http"
        self.address = self.config.advertise or f"{scheme}://{_url_host(host)}:{bound_port}"
        try:
            parse_address(self.address)  # peers seal for this exact string: it must be the canonical one
        except AddressError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise StartupError(f"advertise: {exc}; set advertise to this node's URL") from None
        log.info("gossipd %s listening on %s:%d, advertising %s; loading data and model", VERSION,
                 _url_host(host), bound_port, self.address)

    def _load_secrets(self) -> tuple[Any, Any]:
        """Keyring, admin token and TLS contexts, or StartupError with one line. (server, client) SSL contexts."""
        from gossipd.daemon.tls import TLSError, client_context, server_context

        sec, tls = self.config.security, self.config.tls
        try:
            self.keyring = credentials.load_keyring(sec.keyring)
            self._admin_token = credentials.load_admin_token(sec.admin_token_file, self.store.dir, create=True)
        except (credentials.CredentialError, OSError) as exc:
            raise StartupError(str(exc)) from None
        try:
            server_ssl = None
            if tls.enabled:
                server_ssl = server_context(tls.cert, tls.key, ca=tls.ca,  # type: ignore[arg-type]
                                            require_client_cert=tls.require_client_cert)
            client_ssl = client_context(ca=tls.ca, cert=tls.cert, key=tls.key)
        except TLSError as exc:
            raise StartupError(str(exc)) from None
        for setting, path in (("security.keyring", sec.keyring),
                              ("security.admin_token_file",
                               credentials.admin_token_path(sec.admin_token_file, self.store.dir))):
            warning = credentials.permission_warning(setting, path) if path else None
            if warning:
                log.warning("%s", warning)
        host, _ = self.config.host_port
        if self.keyring is None and not is_loopback(host):
            log.warning("listening on %s without a keyring (insecure = true): anyone who can reach this port can "
                        "push models and fill the peer view; see docs/security.md", self.config.listen)
        return server_ssl, client_ssl

    def _build_gate(self) -> None:
        codec = PeerCodec(self.config.cluster, self.address, self.keyring, expected_arch=self.learner.fingerprint,
                          expected_params=self.learner.n_params, max_bytes=self.max_body,
                          expected_stats=self.learner.stat_columns or None,
                          expected_partitions=self.config.gossip.partitions,
                          guard=ReplayGuard(window=self.config.security.replay_window))
        self.gate = PeerGate(codec, self.policy, on_drop=self._report_dropped)

    def reload(self) -> None:
        """SIGHUP: re-read the keyring and the admin token; on any problem keep the old one and say why."""
        sec = self.config.security
        if sec.keyring:
            try:
                keyring = credentials.load_keyring(sec.keyring)
            except credentials.CredentialError as exc:
                log.error("reload: keyring not changed: %s", exc)
            else:
                assert keyring is not None
                self.keyring = keyring
                if self.gate is not None:
                    self.gate.reload(keyring)
                log.info("reload: keyring %s: keys %s; sealing with %s", sec.keyring, ", ".join(keyring.ids()),
                         keyring.primary.hex_id)
                warning = credentials.permission_warning("security.keyring", sec.keyring)
                if warning:
                    log.warning("%s", warning)
        else:
            log.info("reload: no keyring configured (security.keyring); peer messages stay plain")
        try:
            self._admin_token = credentials.load_admin_token(sec.admin_token_file, self.store.dir)
        except credentials.CredentialError as exc:
            log.error("reload: admin token not changed: %s", exc)

    def _build_node(self, now: float) -> None:
        cfg = self.config
        seed = None if cfg.seed < 0 else cfg.seed
        root = np.random.SeedSequence(seed)
        node_ss, sampler_ss = root.spawn(2)
        sampler = Cyclon(self.address, list(cfg.join), cfg.peer_sampling, np.random.default_rng(sampler_ss), now=now)
        checkpoint = self.store.load(cluster=cfg.cluster, fingerprint=self.learner.fingerprint)
        state: ModelState | None = None
        stats: FeatureStats | None = None
        if checkpoint is not None:
            state = checkpoint.state
            if checkpoint.meta.get("stats"):
                stats = FeatureStats.from_dict(checkpoint.meta["stats"])
            try:
                sampler.load_state_dict(checkpoint.view)
            except ValueError as exc:
                log.warning("saved peer view not used: %s", exc)
            for seed_url in cfg.join:
                sampler.add_seed(seed_url)
            # The saved view may be dead by now; seeds, then every address seen, then those
            # that failed are tried in turn once it empties (Cyclon's bootstrap).
            log.info("resumed from checkpoint: model age %g; %d peers, %d seeds, %d more addresses to "
                     "rejoin through", state.age, len(sampler.peers()), len(sampler.seeds),
                     len(set(sampler.known) | set(sampler.failed)))
        self.sampler = sampler
        self.node = GossipNode(address=self.address, learner=self.learner, data=self.feed.store.train_data(),
                               sampler=sampler, config=cfg.gossip, rng=np.random.default_rng(node_ss), state=state,
                               now=now, stats=stats)
        self._publish()
        if checkpoint is not None:
            for key, value in checkpoint.counters.items():
                if hasattr(self.node.counters, key):
                    setattr(self.node.counters, key, value)
            self._saved_marker = self._marker()

    # -- the event loop's side ----------------------------------------------------

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _timer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            # Only on_tick moves the node's timers, so sleeping until the next one is safe.
            delay = self.node.next_wakeup() - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            for send in self.node.on_tick(loop.time()):
                self._spawn(self._deliver(send))

    async def _deliver(self, send: Send) -> None:
        msg = send.message
        path = "/v1/gossip/model" if isinstance(msg, ModelMessage) else "/v1/gossip/shuffle"
        try:
            status, body = await self.client.post(send.peer, path, self.gate.seal(msg, send.peer))
        except PeerError as exc:
            self.unreachable.record((send.peer, exc.reason), f"{send.peer}: {exc.reason}")
            self._peer_failed(send.peer, exc.reason)
            return
        if status == 503:
            return  # busy peer: alive, just loaded; the model walks elsewhere next time
        if status != 200:
            # A peer that refuses our messages (other cluster, architecture or
            # protocol) is no use as a neighbour.
            why = _error_text(status, body)
            self.refused.record((send.peer, path, why), f"{send.peer}: {path} answered {why}")
            self._peer_failed(send.peer, why)
            return
        if isinstance(msg, ShuffleRequest):
            try:
                reply = self.gate.open_reply(body, send.peer)
            except wire.WireError as err:
                self.node.counters.rejected += 1
                self.refused.record((send.peer, "reply", err.code), f"{send.peer}: bad shuffle reply {err.code}",
                                    err.detail)
                self._peer_failed(send.peer, f"bad shuffle reply ({err.code})")
                return
            self.node.on_shuffle_reply(self.now(), reply)

    def _peer_failed(self, peer: str, why: str) -> None:
        if peer in self._logged_view and len(self._left_why) < 1000:
            self._left_why[peer] = why
        self.node.on_send_failed(self.now(), peer)

    async def _log_loop(self) -> None:
        """Counts of summarised lines once their minute is over; view changes, rate-limited."""
        while not self._stopping.is_set():
            await asyncio.sleep(1.0)
            for summary in (self.unreachable, self.refused, self.bad_rows, self.api.rejections, self.http_errors,
                            self.dropped):
                summary.flush()
            self._log_view_changes()

    def _log_view_changes(self) -> None:
        now = time.monotonic()
        if now - self._view_logged_at < VIEW_LOG_INTERVAL:
            return
        current = set(self.sampler.peers())
        entered, left = current - self._logged_view, self._logged_view - current
        if not entered and not left:
            return
        parts = []
        if entered:
            parts.append("entered " + _some(sorted(entered)))
        if left:
            parts.append("left " + _some([f"{p} ({self._left_why[p]})" if p in self._left_why else p
                                          for p in sorted(left)]))
        log.info("view: %d peer%s; %s", len(current), "" if len(current) == 1 else "s", "; ".join(parts))
        self._logged_view, self._view_logged_at = current, now
        self._left_why.clear()

    async def apply_model(self, msg: ModelMessage) -> float:
        """Merge and train in the trainer thread (one at a time); the loop stays free. The new age."""
        self.pending += 1
        try:
            now = self.now()
            state = await asyncio.get_running_loop().run_in_executor(self._trainer, self._train, now, msg)
            # A token account forwards a useful model at once (plain push: nothing); on the loop,
            # the thread that runs on_tick, so the account's balance has one writer.
            for send in self.node.react(self.now()):
                self._spawn(self._deliver(send))
            return state.age
        finally:
            self.pending -= 1

    def _train(self, now: float, msg: ModelMessage) -> ModelState:
        state = self.node.on_model(now, msg)
        self._publish()
        return state

    def _publish(self) -> None:
        """The node's model and its scaling statistics as ONE tuple (trainer thread, the only
        writer): readers on other threads (status, /v1/model, export, predict) take it in one
        read, never a model with another model's statistics."""
        self.current = (self.node.state, self.node.stats)

    def _evaluate(self) -> None:
        """The task's metrics of the current model on the held-out examples (trainer thread):
        accuracy, or rmse and r2 for regression (accuracy stays None then)."""
        X_test, y_test = self.feed.store.held_out()
        version = self.feed.store.version
        if len(y_test) == 0:
            return
        state, stats = self.current
        scores = self.learner.scores(state, X_test, y_test, stats)
        self.evaluation = {"accuracy": None, **scores, "at": time.time(), "age": state.age,
                           "examples": int(len(y_test))}
        self._evaluated = (state.age, version)

    async def _eval_loop(self) -> None:
        """Re-evaluate when the model or the held-out examples have changed, at most every
        eval_interval seconds, so /v1/status is never more than that behind the model."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            await asyncio.sleep(self.config.eval_interval)
            if self._evaluated != (self.current[0].age, self.feed.store.version):
                await loop.run_in_executor(self._trainer, self._evaluate)

    # -- arriving data (a followed CSV file or directory; POST /v1/data) ---------------

    async def _data_loop(self) -> None:
        """Every data.poll_interval, the rows added to the followed source since the last look
        (read off the loop) go to the trainer thread; a bad row is logged, not fatal."""
        loop = asyncio.get_running_loop()
        where = self.config.data.dataset
        while not self._stopping.is_set():
            await asyncio.sleep(self.config.data.poll_interval)
            try:
                ex = await loop.run_in_executor(None, self.feed.poll)
                if ex is None:
                    continue
                got = await loop.run_in_executor(self._trainer, self._take_rows, ex.X, ex.y, where)
            except DataError as exc:
                self.bad_rows.record((where, str(exc)), str(exc))
                continue
            log.info("%d new rows from %s: %d to train on, %d held out, %d old ones left; model age %g",
                     got["added"], where, got["train"], got["held_out"], got["evicted"], got["age"])

    def _take_rows(self, X: np.ndarray, labels: np.ndarray, where: str) -> dict[str, Any]:
        """Rows into the store, then one local pass over those to train on (trainer thread)."""
        got = self.feed.add(X, labels, where)
        self.node.use_data(self.feed.store.train_data(), got.new_train, train=True)
        self._publish()
        return {"added": got.train + got.held_out, "train": got.train, "held_out": got.held_out,
                "evicted": got.evicted, "train_examples": self.feed.store.n_train,
                "test_examples": self.feed.store.n_held_out, "age": self.current[0].age}

    async def add_rows(self, doc: Any) -> dict[str, Any]:
        """POST /v1/data: ``{"rows": [[...]], "labels": [...]}`` (raw features, labels as the data
        writes them) into the store and trained on at once. DataError: a 400 naming the problem."""
        X, labels = rows_of(doc, self.learner.n_features, labels=True)
        assert labels is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._trainer, self._take_rows, X, labels, "POST /v1/data")

    def predict(self, doc: Any) -> dict[str, Any]:
        """POST /v1/predict: ``{"rows": [[...]]}`` of raw features -> the current model's labels
        (class names) and probabilities, or values (regression). DataError: a 400."""
        X, _ = rows_of(doc, self.learner.n_features, labels=False)
        state, stats = self.current
        out = self.learner.outputs(state, X, stats)
        answer: dict[str, Any] = {"model_age": state.age, "fingerprint": self.learner.fingerprint}
        if self.learner.task == "regression":
            answer["values"] = out.astype(float).tolist()
            return answer
        names = self.learner.schema.class_names
        answer["classes"] = list(names)
        answer["labels"] = [names[i] for i in out.argmax(axis=1)]
        answer["probabilities"] = np.round(out.astype(float), 6).tolist()
        return answer

    # -- NodeService (what the HTTP API calls) -------------------------------------

    def is_starting(self) -> bool:
        return self.node is None

    def decode(self, body: bytes) -> Message:
        return self.gate.open(body)

    def count_rejected(self, code: str) -> None:
        self.node.counters.rejected += 1
        self.gate.count(code)

    def _report_dropped(self, sender: str, dropped: tuple[tuple[str, str], ...]) -> None:
        for address, reason in dropped:
            self.dropped.record((sender, "address"), f"shuffle addresses from {sender}", reason)

    def _report_http_error(self, kind: str, remote: str, detail: str, exc: BaseException | None) -> None:
        if self.http_errors.record((remote, kind), f"{kind} from {remote}", detail) and exc is not None:
            log.error("the traceback of that HTTP %s (later ones are only counted)", kind, exc_info=exc)

    def busy_reason(self) -> str | None:
        if self.pending >= self.config.max_pending:
            return f"{self.pending} models already wait for training; try later"
        return None

    def answer_shuffle(self, msg: ShuffleRequest) -> bytes | bytearray:
        reply = self.node.on_shuffle_request(self.now(), msg) or ShuffleReply(self.address, ())
        # Sealed for the requester: the seal proved msg.sender is the address it advertises.
        return self.gate.seal(reply, msg.sender)

    def peers_report(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "advertise": self.address,
                "peers": [{"address": d.address, "age": d.age} for d in self.sampler.view],
                "seeds": list(self.sampler.seeds)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        peers = len(self.node.sampler.peers())
        return peers > 0, {"model_loaded": True, "peers": peers}

    def metrics_text(self) -> bytes:
        return self.metrics.text()

    def metrics_snapshot(self) -> MetricsSnapshot:
        node, state, ev, store = self.node, self.current[0], self.evaluation, self.feed.store
        return MetricsSnapshot(
            counters=node.counters.as_dict(), model_age=state.age, model_params=state.size,
            peers=len(node.sampler.peers()), pending_updates=self.pending,
            uptime_seconds=time.monotonic() - self.started, accuracy=ev.get("accuracy"), rmse=ev.get("rmse"),
            r2=ev.get("r2"), train_examples=store.n_train, test_examples=store.n_held_out,
            arrived_examples=self.feed.counts.arrived, rejections=dict(self.gate.rejections),
            dropped_addresses=self.gate.dropped_addresses, connections=self.guard.stats())

    def model_msgpack(self) -> bytes:
        # Plain, never sealed: the admin export, for tools outside the cluster (gossip export, scripts).
        state, stats = self.current
        msg = ModelMessage(self.address, self.learner.fingerprint, state.age, state.params,
                           stats if self.learner.scaling.learned else None)
        return wire.encode(msg, cluster=self.config.cluster)

    def model_onnx(self) -> tuple[bytes, str]:
        from gossipd.export import export_onnx_bytes

        state, stats = self.current
        X_test = self.feed.store.held_out()[0]
        try:
            data = export_onnx_bytes(self.learner, state, stats=stats, metadata={"gossipd.node_id": self.node_id},
                                     check_X=X_test if len(X_test) else None)
        except Exception as exc:  # whatever torch.onnx or onnxruntime raise: a 409 with the reason, never a 500
            log.warning("ONNX export failed: %s", exc, exc_info=not isinstance(exc, (ValueError, RuntimeError)))
            raise NotExportable(" ".join(str(exc).split())[:500] or type(exc).__name__) from None
        return data, f"gossipd-{self.node_id}.onnx"

    def admin_denied(self, remote: str | None) -> str | None:
        if ip_allowed(remote, self.config.admin_allow):
            return None
        return f"admin calls are not allowed from {remote} (admin_allow: {', '.join(self.config.admin_allow)})"

    def admin_token(self) -> str:
        return self._admin_token

    def own_address(self) -> str:
        return self.address

    def check_peer(self, url: str) -> str:
        return self.policy.check(url).url

    def join(self, url: str) -> dict[str, Any]:
        for send in self.node.join(self.now(), url):
            self._spawn(self._deliver(send))
        log.info("joined seed %s", url)
        return {"joined": url, "peers": len(self.node.sampler.peers())}

    # -- reports ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self.current[0]
        return {
            "node_id": self.node_id,
            "version": VERSION,
            "protocol": wire.PROTOCOL_VERSION,
            "cluster": self.config.cluster,
            "advertise": self.address,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "model": {"spec": self.learner.spec, "fingerprint": self.learner.fingerprint,
                      "params": self.learner.n_params, "age": state.age, "task": self.learner.task,
                      "scaling": self.learner.scaling.mode,
                      # columns of the scaling statistics a pushed model must carry (0: none)
                      "stat_columns": self.learner.stat_columns},
            "peers": len(self.node.sampler.peers()),
            "counters": self.node.counters.as_dict(),
            "security": {**self.gate.report(), "tls": self.config.tls.enabled,
                         "client_cert_required": self.config.tls.require_client_cert},
            "connections": self.guard.stats(),
            "pending": self.pending,
            "evaluation": self.evaluation,
            "data": {"dataset": self.config.data.dataset, "share": self.config.data.share,
                     "split": self.config.data.split, **self.feed.report()},
        }

    # -- persistence ---------------------------------------------------------------

    def _marker(self) -> tuple[float, int]:
        return (self.current[0].age, self.node.counters.merged)

    def checkpoint(self) -> None:
        """Write model, age, view and counters (thread-safe: reads immutable state)."""
        marker = self._marker()
        state, stats = self.current
        self.store.save(Checkpoint(
            node_id=self.node_id, cluster=self.config.cluster, fingerprint=self.learner.fingerprint,
            state=state, view=self.sampler.state_dict(), counters=self.node.counters.as_dict(),
            meta={"spec": self.learner.spec, "n_features": self.learner.n_features,
                  "n_classes": self.learner.n_classes, "schema": self.learner.schema.to_dict(),
                  "scaling": self.learner.scaling.mode,
                  "stats": None if stats is None else stats.to_dict(),
                  "dataset": self.config.data.dataset,
                  "share": self.config.data.share, "split": self.config.data.split,
                  "label_column": self.config.data.label_column},
        ))
        self._saved_marker = marker

    async def _checkpoint_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            await asyncio.sleep(self.config.checkpoint_interval)
            if self._marker() != self._saved_marker:
                try:
                    await loop.run_in_executor(None, self.checkpoint)
                except OSError as exc:
                    log.error("checkpoint failed: %s", exc)

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        while not self._stopping.is_set():
            self.notifier.watchdog()  # from the loop itself: a hung loop stops the pings
            await asyncio.sleep(interval)

    # -- shutdown ------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Stop timers, finish the update in flight, close, then write the checkpoint last."""
        self._stopping.set()
        self.notifier.stopping("checkpointing")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()  # no new requests; in-flight handlers get a short grace
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._trainer.shutdown, True)  # the update in flight completes
        if self.client is not None:
            await self.client.close()
        (self.store.dir / "endpoint").unlink(missing_ok=True)
        for summary in (self.unreachable, self.refused, self.bad_rows, self.http_errors, self.dropped,
                        *([self.api.rejections] if self.api else [])):
            summary.close()
        if self.node is not None:
            await loop.run_in_executor(None, self.checkpoint)
            log.info("stopped; checkpoint written (model age %g)", self.node.state.age)


def _some(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _error_text(status: int, body: bytes) -> str:
    """``HTTP 409 wrong_cluster: detail`` from a gossipd JSON error, else the status and a snippet."""
    try:
        data = json.loads(body)
        return f"HTTP {status} {data['error']}: {data.get('detail', '')}".rstrip(": ")
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        snippet = " ".join(body[:120].decode(errors="replace").split())
        return f"HTTP {status}" + (f" ({snippet})" if snippet else "")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run(config: NodeConfig) -> int:
    """Serve until SIGTERM/SIGINT; the process exit code (one line on stderr if it cannot start)."""
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(config))
    except StartupError as exc:
        print(f"gossipd: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0


async def serve(config: NodeConfig) -> None:
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    # Before start(): a SIGTERM while the model loads must still get the graceful path.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)  # systemctl reload: re-read keyring and token
    try:
        await daemon.start()
        await daemon.wait_stopped()
    finally:
        await daemon.stop()


__all__ = ["Daemon", "StartupError", "run", "serve"]
