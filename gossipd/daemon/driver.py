"""gossipd: the asyncio driver of one GossipNode on the wall clock and HTTP.

The same GossipNode and Cyclon sampler the simulator drives; this module only
adds time (a :class:`~gossipd.daemon.clock.Clock`), a transport (HTTP by
aiohttp, or in memory for tests: ``gossipd.daemon.transport``), a trainer
thread fed by a bounded queue (``gossipd.daemon.inbox``), checkpoints,
signals, sd_notify and supervision of its background loops.

Every request the node sends gets exactly one answer back into the core:
``on_shuffle_reply``, or ``on_outcome`` with what the transport saw, mapped
once (``transport.outcome_of_status`` / ``outcome_of_error``). A received
model is validated, rate-limited per sender, queued and answered ``202`` at
once; the trainer merges the queue in order and logs what numeric safety
discarded. A background loop that dies stops the process with status 70
(``supervisor.py``), and the watchdog pings only while every loop runs.

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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gossipd import wire
from gossipd.addresses import AddressError, PeerPolicy, parse_address
from gossipd.core.scaling import FeatureStats
from gossipd.core.messages import ModelMessage, Outcome, Send, ShuffleReply, ShuffleRequest
from gossipd.core.node import Discard, GossipNode, NodeModel, RejectedMessage
from gossipd.core.state import ModelState
from gossipd.daemon import credentials
from gossipd.daemon.clock import Clock, SystemClock
from gossipd.daemon.config import NodeConfig, is_loopback
from gossipd.daemon.gate import PeerGate
from gossipd.daemon.http import Api, HttpTransport, NotExportable, ip_allowed
from gossipd.daemon.inbox import Inbox, InboxFull, RateLimit
from gossipd.daemon.metrics import Metrics, MetricsSnapshot
from gossipd.daemon.server import ConnectionGuard, GuardedSite, ServerLimits, fd_limit
from gossipd.daemon.sdnotify import Notifier
from gossipd.daemon.store import Checkpoint, Store, atomic_write
from gossipd.daemon.supervisor import EXIT_TASK_DIED, Supervisor
from gossipd.daemon.transport import (
    MODEL_PATH,
    MSGPACK,
    SHUFFLE_PATH,
    Answer,
    SendFailed,
    Transport,
    outcome_of_status,
)
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
    """One node on the wall clock; implements the HTTP API's ``NodeService``.

    ``transport``: how peer messages travel (default: HTTP, built at start);
    ``clock``: where time comes from (default: the system's). Tests pass a
    ``MemoryTransport`` and a ``VirtualClock`` to run several daemons in one
    process (``gossipd.daemon.memory_transport``)."""

    def __init__(self, config: NodeConfig, *, transport: Transport | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.transport = transport
        self.store = Store(config.state_dir)
        self.started = self.clock.now()
        # Until the learner exists the size limit is unknown; peer messages get 503 "starting" anyway.
        self.max_body = 1 << 20
        self.evaluation: dict[str, Any] = {"accuracy": None, "at": None}
        self.notifier = Notifier.from_env()
        self._trainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gossipd-train")
        # Received models wait here for the trainer (one per sender); senders are rate-limited.
        self.inbox = Inbox(config.max_pending)
        self.limiter = RateLimit(rate=config.sender_rate / config.gossip.interval, burst=2 * config.sender_rate)
        self.training = False
        self.train_failures = 0
        self._deliveries: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self.supervisor = Supervisor(on_death=lambda name: self.request_stop(), stopping=self._stopping.is_set)
        self._saved_marker: tuple[float, int] | None = None
        # Set in start(); until then the HTTP side answers 503 "starting".
        self.node: GossipNode | None = None
        self.sampler: Cyclon = None  # type: ignore[assignment]
        self.address = ""
        self.node_id = ""
        self._runner: Any = None
        self.api: Api | None = None
        self.metrics = Metrics(self.metrics_snapshot)
        now = self.clock.now
        # Failures and refusals of our own messages: one line per peer and reason, then counts.
        self.unreachable = LogSummary(log, "cannot reach", level=logging.INFO, clock=now)
        self.refused = LogSummary(log, "refused by", clock=now)
        self.bad_rows = LogSummary(log, "rows not taken from", clock=now)
        # Messages we refused: one line per sender, path and reason at once, then a count at most
        # once a minute (one WARNING each let a hostile sender grow the log by 50 MB in 30 s).
        self.rejections = LogSummary(log, "rejected", clock=now)
        # What numeric safety threw away: once per stage and reason, then counts.
        self.discards = LogSummary(log, "discarded", clock=now)
        # Bugs: a delivery or a training step that raised (with the traceback the first time).
        self.failures = LogSummary(log, "failed:", level=logging.ERROR, clock=now)
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
        self.http_errors = LogSummary(log, "HTTP", clock=now)
        self.dropped = LogSummary(log, "dropped", clock=now)

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
        served = await self.transport.listen(self.peer_message) if self.transport is not None else None
        if served is not None:
            self.address = served  # the transport serves peer messages itself (in memory): no HTTP server
        else:
            await self._bind(server_ssl)
        # Where this daemon can be reached, for tools started with --state-dir (and tests on port 0).
        atomic_write(self.store.dir / "endpoint", (self.address + "\n").encode())
        self.notifier.status(f"listening on {self.address}; loading data and model")
        await loop.run_in_executor(None, self._load_data)
        if self._stopping.is_set():
            return
        self._build_gate()
        self._build_node(self.clock.now())
        if self.transport is None:
            self.transport = HttpTransport(self.config.request_timeout, self.max_body, self.policy, client_ssl)
        await loop.run_in_executor(self._trainer, self._evaluate)
        loops = {"timers": self._timer_loop(), "trainer": self._train_loop(), "checkpoints": self._checkpoint_loop(),
                 "watchdog": self._watchdog_loop(), "evaluation": self._eval_loop(), "logs": self._log_loop()}
        if self.feed.tail is not None:
            loops["data"] = self._data_loop()
        for name, coro in loops.items():
            self.supervisor.spawn(name, coro)
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
        # Seals carry wall-clock seconds (other nodes compare them with their clocks).
        self.gate = PeerGate(codec, self.policy, clock=self.clock.wall, on_drop=self._report_dropped)

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
            try:
                if checkpoint.meta.get("stats"):
                    stats = FeatureStats.from_dict(checkpoint.meta["stats"])
            except (TypeError, ValueError, KeyError) as exc:
                log.warning("saved scaling statistics not used (%s); starting from this node's data's", exc)
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
        make = dict(address=self.address, learner=self.learner, data=self.feed.store.train_data(), sampler=sampler,
                    config=cfg.gossip, rng=np.random.default_rng(node_ss), now=now)
        try:
            self.node = GossipNode(**make, state=state, stats=stats)  # type: ignore[arg-type]
        except ValueError as exc:
            if checkpoint is None:
                raise
            # Numeric safety keeps a running node's model finite and bounded, so a checkpoint
            # written since holds a sound one; one written by an older gossipd may not (its
            # model could overflow to inf, then NaN). Its view, seeds and books are still good:
            # rejoin with them, and start the model afresh (age 0) rather than from garbage.
            log.warning("the checkpoint's model is not usable (%s), as an older gossipd could write it; "
                        "starting from a fresh model (age 0), keeping the saved peer view, seeds and counters",
                        exc)
            self.node = GossipNode(**make)  # type: ignore[arg-type]
        if checkpoint is not None:
            for key, value in checkpoint.counters.items():
                if hasattr(self.node.counters, key):
                    setattr(self.node.counters, key, value)
            self._saved_marker = self._marker()

    @property
    def model(self) -> NodeModel:
        """The node's model and its scaling statistics: ONE value (the trainer thread replaces it
        whole), so readers on any thread never pair a model with another model's statistics."""
        assert self.node is not None
        return self.node.model

    # -- the event loop's side ----------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        """A one-off task (a delivery); an exception in it is a bug: logged, never silent."""
        task = asyncio.get_running_loop().create_task(coro)
        self._deliveries.add(task)
        task.add_done_callback(self._delivery_done)
        return task

    def _delivery_done(self, task: asyncio.Task[Any]) -> None:
        self._deliveries.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if self.failures.record(("delivery", type(exc).__name__), f"a delivery raised {type(exc).__name__}",
                                str(exc)):
            log.error("the traceback of that delivery (later ones are only counted)", exc_info=exc)

    async def _timer_loop(self) -> None:
        while not self._stopping.is_set():
            # Only on_tick moves the node's timers, so sleeping until the next one is safe.
            delay = self.node.next_wakeup() - self.clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            for send in self.node.on_tick(self.clock.now()):
                self._spawn(self._deliver(send))

    async def _deliver(self, send: Send) -> None:
        """Send one message; hand the core exactly one answer: the shuffle reply, or the
        outcome (``gossipd.daemon.transport``: the one mapping of results to outcomes)."""
        msg = send.message
        path = MODEL_PATH if isinstance(msg, ModelMessage) else SHUFFLE_PATH
        try:
            answer = await self.transport.post(send.peer, path, self.gate.seal(msg, send.peer))
        except SendFailed as failed:
            outcome, why = failed.outcome, failed.reason
        else:
            outcome = outcome_of_status(answer.status)
            # Only a failure is reported: a 2xx body (a shuffle reply is msgpack) is not parsed for it.
            why = "" if outcome.alive else _error_text(answer.status, answer.body)
            if outcome is Outcome.DELIVERED and isinstance(msg, ShuffleRequest):
                try:
                    reply = self.gate.open_reply(answer.body, send.peer)
                except wire.WireError as err:  # undecodable, forged or from someone else: refused
                    self.node.counters.rejected += 1
                    outcome, why = Outcome.REFUSED, f"bad shuffle reply ({err.code}: {err.detail})"
                else:
                    self.node.on_shuffle_reply(self.clock.now(), reply)
                    return
        self._report(send.peer, path, outcome, why)
        self.node.on_outcome(self.clock.now(), send.peer, outcome)

    def _report(self, peer: str, path: str, outcome: Outcome, why: str) -> None:
        """One line per peer and reason for what went wrong (then counts); busy is no news."""
        if outcome.alive:
            return
        if outcome is Outcome.REFUSED:
            self.refused.record((peer, path, why), f"{peer}: {path} answered {why}")
        else:
            self.unreachable.record((peer, why), f"{peer}: {why}")
        if peer in self._logged_view and len(self._left_why) < 1000:
            self._left_why[peer] = why

    async def _log_loop(self) -> None:
        """Counts of summarised lines once their minute is over; view changes, rate-limited."""
        while not self._stopping.is_set():
            await asyncio.sleep(1.0)
            for summary in self._summaries():
                summary.flush()
            self._log_view_changes()

    def _summaries(self) -> tuple[LogSummary, ...]:
        return (self.unreachable, self.refused, self.bad_rows, self.rejections, self.discards, self.failures,
                self.http_errors, self.dropped)

    def _log_view_changes(self) -> None:
        now = self.clock.now()
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

    # -- received models: the queue and the trainer -------------------------------------

    @property
    def pending(self) -> int:
        """Models waiting for the trainer, the one it is on included."""
        return len(self.inbox) + self.training

    async def _train_loop(self) -> None:
        """Merge and train the queued models one at a time in the trainer thread; log what
        numeric safety discarded; answer senders that wait for the merge."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            item = await self.inbox.get()
            self.training = True
            started = self.clock.now()
            try:
                state, discards = await loop.run_in_executor(self._trainer, self._train, self.clock.now(), item.msg)
            except RejectedMessage as exc:  # the gate checks all this first; kept as a net
                self.failures.record(("rejected", str(exc)), "merging a model", str(exc))
                item.settle({"merged": False, "error": str(exc)})
                continue
            except Exception as exc:  # one model that breaks the learner must not stop the node
                self.train_failures += 1
                if self.failures.record(("train", type(exc).__name__), f"training raised {type(exc).__name__}",
                                        str(exc)):
                    log.error("the traceback of that training failure (later ones are only counted)",
                              exc_info=exc)
                item.settle({"merged": False, "error": "training failed"})
                continue
            finally:
                self.training = False
                self.inbox.note_training(self.clock.now() - started)
            for note in discards:
                self.discards.record((note.stage, note.reason), f"{note.stage} results ({note.reason})", str(note))
            # A token account forwards a useful model at once (plain push: nothing); here on the loop,
            # the thread that runs on_tick, so the account's balance has one writer.
            for send in self.node.react(self.clock.now()):
                self._spawn(self._deliver(send))
            answer: dict[str, Any] = {"merged": not discards, "age": state.age}
            if discards:
                answer["discarded"] = discards[-1].reason
            item.settle(answer)

    def _train(self, now: float, msg: ModelMessage) -> tuple[ModelState, list[Discard]]:
        """Trainer thread: merge and train; the model after, and what numeric safety threw away."""
        state = self.node.on_model(now, msg)
        return state, self.node.take_discards()

    def _evaluate(self) -> None:
        """The task's metrics of the current model on the held-out examples (trainer thread):
        accuracy, or rmse and r2 for regression (accuracy stays None then)."""
        X_test, y_test = self.feed.store.held_out()
        version = self.feed.store.version
        if len(y_test) == 0:
            return
        state, stats = self.model
        scores = self.learner.scores(state, X_test, y_test, stats)
        self.evaluation = {"accuracy": None, **scores, "at": self.clock.wall(), "age": state.age,
                           "examples": int(len(y_test))}
        self._evaluated = (state.age, version)

    async def _eval_loop(self) -> None:
        """Re-evaluate when the model or the held-out examples have changed, at most every
        eval_interval seconds, so /v1/status is never more than that behind the model."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            await asyncio.sleep(self.config.eval_interval)
            if self._evaluated != (self.model.state.age, self.feed.store.version):
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
        return {"added": got.train + got.held_out, "train": got.train, "held_out": got.held_out,
                "evicted": got.evicted, "train_examples": self.feed.store.n_train,
                "test_examples": self.feed.store.n_held_out, "age": self.model.state.age}

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
        state, stats = self.model
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

    async def peer_message(self, path: str, body: bytes, remote: str | None, *, respond_async: bool) -> Answer:
        """A message from a peer, whatever carried it (HTTP, or the in-memory transport):
        opened and checked by the gate, rate-limited per sender, then a shuffle is answered
        at once and a model is queued for the trainer (``202 queued``, or for a sender that
        waits, the merge's outcome once it is done)."""
        early = self.refuse_early(path)
        if early is not None:
            return early
        try:
            msg = self.gate.open(body)
            expected = ModelMessage if path == MODEL_PATH else ShuffleRequest
            if not isinstance(msg, expected):
                raise wire.WireError(400, "wrong_endpoint", f"a {type(msg).__name__} was posted to {path}")
        except wire.WireError as err:
            self.reject(remote, path, err)
            return Answer.json(err.status, err.to_json())
        wait = self.limiter.admit(msg.sender, self.clock.now())
        if wait > 0:
            return Answer.error(429, "too_many_requests", f"{msg.sender} sends more than {self.config.sender_rate:g} "
                                f"messages per {self.config.gossip.interval:g} s; retry in {wait:.1f} s",
                                retry_after=wait)
        if isinstance(msg, ShuffleRequest):
            reply = self.node.on_shuffle_request(self.clock.now(), msg) or ShuffleReply(self.address, ())
            # Sealed for the requester: the seal proved msg.sender is the address it advertises.
            return Answer(200, self.gate.seal(reply, msg.sender), MSGPACK)
        try:
            item = self.inbox.put(msg, wait=not respond_async)
        except InboxFull as full:
            return self._busy(full.retry_after)
        if item.done is None:
            return Answer.json(202, {"queued": True, "pending": self.pending})
        # A sender from before 202 (no "Prefer: respond-async") waits for the merge, as it used to.
        return Answer.json(200, await asyncio.shield(item.done))

    def refuse_early(self, path: str) -> Answer | None:
        """The answer to a peer message that needs no reading: 503 while starting, or for a model
        while the queue is full (its body is then neither read nor decoded: under a flood that
        work is what delays everyone else, /healthz included)."""
        if self.is_starting():
            return Answer.error(503, "starting", "the node is still starting; try again in a moment")
        if path == MODEL_PATH and self.inbox.full:
            self.inbox.stats.full += 1
            return self._busy(self.inbox.retry_after())
        return None

    def _busy(self, retry_after: float) -> Answer:
        return Answer.error(503, "busy", f"{len(self.inbox)} models already wait for training; retry in "
                            f"{retry_after:.0f} s", retry_after=retry_after)

    def reject(self, remote: str | None, path: str, err: wire.WireError) -> None:
        """A peer message refused with ``err``: counted (by code) and logged, rate-limited."""
        if self.node is not None:
            self.node.counters.rejected += 1
        if self.gate is not None:
            self.gate.count(err.code)
        self.rejections.record((remote, path, err.code), f"POST {path} from {remote}: {err.code}", err.detail)

    def _report_dropped(self, sender: str, dropped: tuple[tuple[str, str], ...]) -> None:
        for address, reason in dropped:
            self.dropped.record((sender, "address"), f"shuffle addresses from {sender}", reason)

    def _report_http_error(self, kind: str, remote: str, detail: str, exc: BaseException | None) -> None:
        if self.http_errors.record((remote, kind), f"{kind} from {remote}", detail) and exc is not None:
            log.error("the traceback of that HTTP %s (later ones are only counted)", kind, exc_info=exc)

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
        node, state, ev, store = self.node, self.model.state, self.evaluation, self.feed.store
        return MetricsSnapshot(
            counters=node.counters.as_dict(), model_age=state.age, model_params=state.size,
            peers=len(node.sampler.peers()), pending_updates=self.pending,
            uptime_seconds=self.clock.now() - self.started, accuracy=ev.get("accuracy"), rmse=ev.get("rmse"),
            r2=ev.get("r2"), train_examples=store.n_train, test_examples=store.n_held_out,
            arrived_examples=self.feed.counts.arrived, rejections=dict(self.gate.rejections),
            dropped_addresses=self.gate.dropped_addresses, connections=self.guard.stats(),
            inbox=self.inbox_report())

    def inbox_report(self) -> dict[str, int]:
        """What backpressure did: models queued (202), superseded by a newer one from the same
        sender, refused because the queue was full (503), requests over a sender's rate (429),
        models whose training raised."""
        st = self.inbox.stats
        return {"queued": len(self.inbox), "capacity": self.inbox.capacity, "accepted": st.accepted,
                "superseded": st.superseded, "full": st.full, "throttled": self.limiter.limited,
                "failed": self.train_failures}

    def model_msgpack(self) -> bytes:
        # Plain, never sealed: the admin export, for tools outside the cluster (gossip export, scripts).
        state, stats = self.model
        msg = ModelMessage(self.address, self.learner.fingerprint, state.age, state.params,
                           stats if self.learner.scaling.learned else None)
        return wire.encode(msg, cluster=self.config.cluster)

    def model_onnx(self) -> tuple[bytes, str]:
        from gossipd.export import export_onnx_bytes

        state, stats = self.model
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
        state = self.model.state
        return {
            "node_id": self.node_id,
            "version": VERSION,
            "protocol": wire.PROTOCOL_VERSION,
            "cluster": self.config.cluster,
            "advertise": self.address,
            "uptime_s": round(self.clock.now() - self.started, 3),
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
            "inbox": self.inbox_report(),
            "evaluation": self.evaluation,
            "data": {"dataset": self.config.data.dataset, "share": self.config.data.share,
                     "split": self.config.data.split, **self.feed.report()},
        }

    # -- persistence ---------------------------------------------------------------

    def _marker(self) -> tuple[float, int]:
        return (self.model.state.age, self.node.counters.merged)

    def snapshot(self) -> Checkpoint:
        """What a checkpoint holds, copied on the event loop in one go: the view, seeds and books
        (which only the loop changes), the model with its statistics (one value), the counters.
        Encoding and fsync then run in an executor on this copy alone."""
        state, stats = self.model
        return Checkpoint(
            node_id=self.node_id, cluster=self.config.cluster, fingerprint=self.learner.fingerprint,
            state=state, view=self.sampler.state_dict(), counters=self.node.counters.as_dict(),
            saved_at=self.clock.wall(),
            meta={"spec": self.learner.spec, "n_features": self.learner.n_features,
                  "n_classes": self.learner.n_classes, "schema": self.learner.schema.to_dict(),
                  "scaling": self.learner.scaling.mode,
                  "stats": None if stats is None else stats.to_dict(),
                  "dataset": self.config.data.dataset,
                  "share": self.config.data.share, "split": self.config.data.split,
                  "label_column": self.config.data.label_column},
        )

    async def checkpoint(self) -> None:
        """Snapshot on the loop, write (encode, fsync, rename) off it. OSError if the write failed."""
        marker, cp = self._marker(), self.snapshot()
        await asyncio.get_running_loop().run_in_executor(None, self.store.save, cp)
        self._saved_marker = marker

    async def _checkpoint_loop(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.config.checkpoint_interval)
            if self._marker() != self._saved_marker:
                try:
                    await self.checkpoint()
                except OSError as exc:  # a full disk: say so, keep serving, try again next time
                    log.error("checkpoint failed: %s", exc)

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            await self._stopping.wait()  # nothing to ping, but a loop like the others
            return
        while not self._stopping.is_set():
            # From the loop itself (a hung loop stops the pings), and only while every background
            # loop runs: a node that stopped training or gossiping is not healthy.
            if self.supervisor.alive():
                self.notifier.watchdog()
            await asyncio.sleep(interval)

    # -- shutdown ------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    @property
    def exit_code(self) -> int:
        """0 after a requested stop; EXIT_TASK_DIED when a background loop died."""
        return 0 if self.supervisor.failure is None else EXIT_TASK_DIED

    async def stop(self) -> None:
        """Stop the loops, finish the update in flight, close, then write the checkpoint last."""
        self._stopping.set()
        self.notifier.stopping("checkpointing")
        await self.supervisor.stop()
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        self.inbox.close({"merged": False, "stopping": True})
        if self._runner is not None:
            await self._runner.cleanup()  # no new requests; in-flight handlers get a short grace
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._trainer.shutdown, True)  # the update in flight completes
        if self.transport is not None:
            await self.transport.close()
        (self.store.dir / "endpoint").unlink(missing_ok=True)
        for summary in self._summaries():
            summary.close()
        if self.node is not None:
            try:
                await self.checkpoint()
            except OSError as exc:
                log.error("final checkpoint failed: %s", exc)
            else:
                log.info("stopped; checkpoint written (model age %g)", self.model.state.age)
        if self.supervisor.failure is not None:
            log.critical("exiting with status %d: background task %s", EXIT_TASK_DIED, self.supervisor.failure)


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
        return asyncio.run(serve(config))
    except StartupError as exc:
        print(f"gossipd: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


async def serve(config: NodeConfig) -> int:
    """Run one daemon until asked to stop, or until a background loop dies; the exit status."""
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
    return daemon.exit_code


__all__ = ["Daemon", "StartupError", "run", "serve"]
