"""NodeConfig: everything a daemon can be told, each setting declared once.

A setting is a dataclass field declared with ``knob(default, doc, check,
flag=..., example=...)``; sections are the core's own config dataclasses
(``GossipConfig``, ``CyclonConfig``, ``LearnerConfig``), so their knobs are
defined in one place for the simulator and the daemon alike. From these
declarations ``gossipd.daemon.settings`` derives the TOML keys, the
``GOSSIPD_*`` variables, the flags of ``gossipd``, the checks and the
documented example (``gossipd --print-config-example``, kept in
``systemd/gossipd.toml``).

Adding a setting: one ``knob(...)`` line in the dataclass it belongs to (a new
section: one ``section(...)`` line in NodeConfig), then ``make docs`` to
regenerate the example; ``tests/test_daemon_config.py`` fails until then.

Layers, later wins: defaults < TOML file < ``GOSSIPD_*`` environment < flags.
An invalid value stops start-up with one line that names the key and where
the value came from.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossipd.addresses import AddressError, PeerPolicy, parse_address
from gossipd.core.node import GossipConfig
from gossipd.core.spec import LearnerConfig, parse_input_shape, parse_model_spec, parse_scaling, parse_task
from gossipd.daemon.settings import (
    ConfigError,
    Layered,
    build,
    layer_env,
    layer_file,
    layer_overrides,
    render_example,
    section,
    settings_of,
)
from gossipd.data import parse_share, parse_split
from peer_sampling.cyclon import CyclonConfig
from peer_sampling.knobs import (
    KnobError,
    check_knobs,
    fraction_below_one,
    integer,
    knob,
    positive,
    positive_or_inf,
)

ENV_PREFIX = "GOSSIPD_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

__all__ = ["ConfigError", "NodeConfig", "SETTINGS", "SecuritySection", "TLSSection", "is_loopback", "load_config",
           "example_config"]


# -- checks of the daemon's own settings ------------------------------------------------


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port_s = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:7070), got {listen!r}")
    return host, int(port_s)


def is_loopback(host: str) -> bool:
    """True for a listen host only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _address(url: str) -> None:
    # The one canonical spelling (gossipd.addresses): a sealed message is bound
    # to the receiver's address string, so the advertised URL must be exactly
    # what peers write.
    try:
        parse_address(url)
    except AddressError as exc:
        raise ValueError(str(exc)) from None


def _advertise(url: str) -> None:
    if url:
        _address(url)


def _urls(urls: tuple[str, ...]) -> None:
    for url in urls:
        _address(url)


def _cluster(name: str) -> None:
    if not 1 <= len(name) <= 128:
        raise ValueError(f"expected 1 to 128 characters, got {name!r}")


def _not_empty(value: str) -> None:
    if not value.strip():
        raise ValueError("must not be empty")


_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _node_id(value: str) -> None:
    # It names files and appears in an HTTP header (the ONNX download's file name).
    if value and not _NODE_ID.fullmatch(value):
        raise ValueError(f"expected up to 64 letters, digits, '.', '_' or '-', got {value!r}")


def _optional_path(value: str | None) -> None:
    if value is not None and not value.strip():
        raise ValueError("must not be blank (leave it unset instead)")


def _path(value: str) -> None:
    if value and not value.strip():
        raise ValueError("must not be blank")


def _peer_allow(entries: tuple[str, ...]) -> None:
    try:
        PeerPolicy.from_cidrs(entries)
    except ValueError as exc:  # the knob error names the key already
        raise ValueError(str(exc).removeprefix("peer_allow: ")) from None


def _max_connections(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 16:
        raise ValueError(f"must be an integer >= 16, got {value!r}")


def _networks(entries: tuple[str, ...]) -> None:
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"expected IP addresses, CIDR ranges (10.0.0.0/8) or *, got {entry!r}") from None


def _log_level(value: str) -> None:
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"expected {', '.join(LOG_LEVELS)}, got {value!r}")


def _share(value: str) -> None:
    parse_share(value)


def _split(value: str) -> None:
    parse_split(value)


def _scaling(value: str) -> None:
    parse_scaling(value)


def _input_shape(value: str) -> None:
    if value:
        parse_input_shape(value)


# -- the declaration ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSection:
    """The model and how this node trains it (one local SGD pass per received model)."""

    spec: str = knob("logreg", """Architecture: "logreg", "mlp:H1,H2,..." (hidden layer widths), "cnn"
        (image-shaped data), or your own torch module: "python:PATH.py:FACTORY" / "pkg.module:FACTORY"
        (README: "Your own model").
        Peers with another architecture are refused, so the whole cluster must agree. logreg is small
        and fast (cheap messages, quick convergence); bigger models learn more, but every gossip
        message carries all the parameters.""", parse_model_spec, flag="--model", metavar="SPEC")
    scaling: str = knob("network", """How the model scales its input features: "network" (each node
        starts from its own data's mean and variance; they travel with every push and are merged like
        the model, so the cluster converges to one scaling), "none" (raw features, for data already on
        a sensible scale) or "fixed:PATH" (a JSON or NPZ file with "mean" and "std", and for
        regression "target_mean", "target_std": the same on every node). Part of the model's
        fingerprint: every node of a cluster must use the same.""", _scaling, flag="--scaling",
        metavar="MODE")
    learner: LearnerConfig = section(LearnerConfig, "local training", flatten=True)

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class DataSection:
    """This node's local data."""

    dataset: str = knob("digits", """The local training data: a bundled data set (digits,
        breast_cancer, wine, diabetes), a path to a .csv or .npz file or a directory of them, or
        "python:PATH.py:LOADER" (README: "Data files"). In production
        each machine points at its own data; the bundled sets are for demos and experiments. Checked
        when the data is loaded.""", _not_empty, flag="--dataset", metavar="NAME|FILE", old_keys=("data.source",),
        old_flags=("--data",))
    share: str = knob("1/1", """K/N: this node trains on part K of N (1-based) of the data set's
        training split. The split is cut with one fixed seed, so N daemons hold disjoint parts without
        talking to each other; every node needs a different K with the same N. "1/1": all of it.""", _share,
        flag="--share", metavar="K/N", example="3/10", old_keys=("data.partition",), old_flags=("--partition",))
    split: str = knob("iid", """How the N shares are cut: iid | labels | dirichlet:ALPHA. "iid": shuffled, every share looks alike
        (easiest, fastest convergence); "labels": each share holds few classes (hard, realistic for
        personal data); "dirichlet:ALPHA": label skew in between, smaller ALPHA = more skewed.""",
        _split, flag="--split")
    label_column: str = knob("", """CSV files only: the column holding the label. Empty: "label",
        "target", "y" or "class" if there is one, else the last column.""")
    task: str = knob("auto", """auto | classification | regression. auto: what the data says (bundled
        sets declare theirs; text labels are classes, numbers with a fraction are values, whole numbers
        are classes when there are at most 20 distinct ones, otherwise say which).""", parse_task,
        flag="--task")
    input_shape: str = knob("", """The shape of one example, e.g. "1x8x8" for 8x8 grey images (what
        "cnn" and image modules need). Empty: what the data says (digits and NPZ files of images are
        image-shaped), else flat rows.""", _input_shape, metavar="CxHxW")
    max_examples: int = knob(100_000, """Most examples kept in memory, training and held-out parts
        together; when new rows arrive (a growing CSV file or directory, or POST /v1/data) the oldest
        leave first, so memory stays flat however long the data keeps coming.""", integer(1))
    test_share: float = knob(0.25, """Share of arriving examples held out to keep scoring the model
        (status, metrics) instead of training it. The data loaded at start-up is split 75/25 with
        one fixed seed, like every bundled set.""", fraction_below_one)
    poll_interval: float = knob(1.0, """Seconds between two looks for new rows when data.dataset is a
        CSV file or a directory: rows appended to a CSV file (complete lines only) and files added to
        the directory are trained on at once. inf: never look (the data is read once).""", positive_or_inf)

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class SecuritySection:
    """Who may talk to this node and whom it talks to (docs/security.md): cluster keys, the admin token,
    where peers may be."""

    keyring: str = knob("", """File of cluster keys, one base64 key a line (`gossip keygen -o FILE` makes
        one). Every peer message is then sealed with the first key for its receiver, and only messages
        sealed with one of the keys are accepted. Every node of a cluster uses the same file, readable by
        the daemon only; SIGHUP (systemctl reload) re-reads it, which is how keys rotate without downtime.
        Empty: peer messages travel plain and anyone who can reach the port is a member, so a node whose
        listen address is not loopback refuses to start without a keyring unless insecure = true.""", _path,
        flag="--keyring", metavar="FILE", example="/var/lib/gossipd/keyring")
    insecure: bool = knob(False, """Allow a listen address other than loopback without a keyring (a
        warning is logged at start). Only on a network where every host that can reach the port is
        trusted with the model.""")
    replay_window: float = knob(60.0, """The clock-skew tolerance, in seconds: a sealed message stamped
        further than this from our clock is refused (401 stale), and nonces are remembered this long to
        refuse replays (401 replayed). Run NTP on every node; widen it only for clocks that drift.""",
        positive)
    admin_token_file: str | None = knob(None, """File holding the bearer token that /v1/admin/* and
        /v1/model require (`Authorization: Bearer TOKEN`; `gossip join` and `gossip export` read it with
        --token-file FILE or $GOSSIP_ADMIN_TOKEN). At least 16 characters; SIGHUP re-reads it. Unset:
        STATE_DIR/admin-token, made with a random token at the first start (mode 0600).""", _optional_path,
        example="/etc/gossipd/admin-token")
    peer_allow: tuple[str, ...] = knob(("*",), """IP ranges (CIDR) this node may ever connect to, and
        accept as a message's sender; "*" for any. Link-local and cloud metadata addresses
        (169.254.0.0/16, fe80::/10, fd00:ec2::254, ...) are refused unless an entry lies inside them;
        unspecified, multicast and broadcast addresses always. Host names are checked against the IPs
        they resolve to, when connecting. Refused shuffle entries are dropped and counted.""", _peer_allow,
        example=("10.0.0.0/8", "192.168.0.0/16"))

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class TLSSection:
    """HTTPS, optional (docs/security.md): sealing protects each message; TLS also hides the envelope's
    clear fields and, with require_client_cert, stops strangers at the handshake."""

    cert: str | None = knob(None, """PEM certificate this node presents; with key, it serves HTTPS and
        its default advertise URL is https://. Its names must cover the host in advertise; with
        require_client_cert it needs both the serverAuth and clientAuth key usages (it is also this
        node's client certificate).""", _optional_path, example="/etc/gossipd/node.crt")
    key: str | None = knob(None, "PEM private key of cert, unencrypted, readable by the daemon only.",
                           _optional_path, example="/etc/gossipd/node.key")
    ca: str | None = knob(None, """PEM certificate(s) of the CA that signs the cluster's certificates:
        https:// peers are verified against it only, never the public roots (unset: the system's roots),
        and so are clients when require_client_cert is on.""", _optional_path, example="/etc/gossipd/ca.crt")
    require_client_cert: bool = knob(False, """Mutual TLS: only clients presenting a certificate signed by
        ca complete the handshake, peers and tools alike (gossip status, monitoring). Needs cert, key and
        ca.""")

    def __post_init__(self) -> None:
        check_knobs(self)
        if (self.cert is None) != (self.key is None):
            raise KnobError("", "key" if self.key is None else "cert", "give both tls.cert and tls.key, or neither")
        if self.require_client_cert and (self.ca is None or self.cert is None):
            raise KnobError("", "require_client_cert", "needs tls.ca (to check clients), tls.cert and tls.key")

    @property
    def enabled(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True)
class NodeConfig:
    """A daemon's configuration. Times are in seconds."""

    listen: str = knob("127.0.0.1:7070", """HOST:PORT the HTTP server binds; port 0 picks a free port
        (tests). 0.0.0.0 accepts peers on every IPv4 interface ("[::]:7070" for IPv6 too); 127.0.0.1
        keeps the node private to this machine (tests, a local demo). Wider is reachable by more
        peers, and by more attackers: any address but loopback needs [security] keyring (or
        insecure = true), and a firewall limited to the cluster's hosts still helps.""", split_listen,
        flag="--listen", metavar="HOST:PORT", example="0.0.0.0:7070")
    advertise: str = knob("", """The URL other nodes use to reach this one; it is what we put in our
        messages and peer descriptors. Empty: http://LISTEN, which is not an address when listening
        on 0.0.0.0 or ::, so it is required then. Must be reachable from the peers (not 127.0.0.1
        unless every node runs on this machine). A wrong value does not stop us from sending, but no
        peer can ever answer us.""", _advertise, flag="--advertise", metavar="URL", example="http://node1.example.org:7070")
    join: tuple[str, ...] = knob((), """Seed peers' URLs, contacted at start-up (and again whenever the
        view runs empty) to fill the peer view. One reachable seed is enough; more survive a seed being
        down. Empty: this node waits to be joined by others.""", _urls, flag="--join", metavar="URL",
        example=("http://node2.example.org:7070", "http://node3.example.org:7070"))
    cluster: str = knob("default", """Name of the learning group (1 to 128 characters). Messages from
        another cluster are refused, so two experiments can share hosts without mixing their models.
        All nodes of one cluster must agree on it (and on model.spec).""", _cluster, flag="--cluster")
    state_dir: str = knob("./gossipd-state", """Where the model, its age and the peer view are
        checkpointed and the node id is kept. A restart resumes from there instead of from a random
        model. Must be writable and private to the daemon; the systemd units set $GOSSIPD_STATE_DIR
        (= StateDirectory=, /var/lib/gossipd), which takes precedence over this value.""", _not_empty,
        flag="--state-dir", metavar="DIR", example="/var/lib/gossipd")
    node_id: str = knob("", """Stable name of this node in logs, status and exported models (up to 64
        letters, digits, '.', '_', '-'). Empty: generated once and kept in state_dir.""", _node_id,
        flag="--node-id")
    admin_allow: tuple[str, ...] = knob(("127.0.0.1", "::1"), """Client addresses allowed to call
        /v1/admin/* (e.g. join) and /v1/model: IP addresses or CIDR ranges such as 10.0.0.0/8, or "*"
        for anyone. They need the admin token as well ([security] admin_token_file). Admin calls change
        whom this node talks to, and the model may leak training data: keep it narrow.""", _networks)
    checkpoint_interval: float = knob(5.0, """Seconds between checkpoints (written only when the model
        changed). Shorter loses less on a crash, at the cost of disk writes (each one fsyncs the whole
        model).""", positive)
    eval_interval: float = knob(2.0, """Minimum seconds between two evaluations of the model on the
        local test share (gossip status, /metrics); each costs a forward pass over the share.""", positive)
    request_timeout: float = knob(5.0, """Seconds a peer has to answer a message of ours. No answer in
        time is a strike against it (peer_sampling.max_timeouts in a row drop it from the view); a busy
        answer (429, 503) never is. Too short counts slow but healthy peers out; too long keeps dead
        ones longer.""", positive)
    max_connections: int = knob(1024, """Open client connections this node serves at once. At the cap a
        new connection closes the oldest one that has not finished sending a request (slow clients
        first, then idle keep-alive ones); when every connection is busy, the new one gets 503
        too_many_connections. Each connection holds a file descriptor: the cap is lowered at start to
        the descriptor limit (ulimit -n, LimitNOFILE=) minus 256 for the daemon's own files.""",
        _max_connections)
    header_timeout: float = knob(10.0, """Seconds a client has to send a request's headers, counted from
        connecting or from the end of the previous answer on the same connection (so it is also the
        keep-alive idle limit), and to complete a TLS handshake. Slow clients are closed after it.""",
        positive)
    body_timeout: float = knob(30.0, """Seconds a client has to send a request's body once its headers
        are in (408 body_timeout after it). Must leave a peer on a slow link time to send a whole
        model.""", positive)
    max_pending: int = knob(32, """Received models that may wait for the trainer, one per sender (a
        newer model from the same sender takes its older one's place). Every model is answered at once:
        202 when queued, 503 busy with Retry-After when the queue is full. Bounds memory (one model's
        parameters each) and how stale a model gets before it is merged.""", integer(1))
    sender_rate: float = knob(4.0, """Messages (models and shuffle requests) one peer may send this node
        per gossip.interval, on average; bursts of twice that pass. Beyond, 429 too_many_requests with
        Retry-After. An honest peer sends at most about 2 (one push per interval, shuffles every
        shuffle interval); this bounds how much training and how many shuffles one member can cause
        here.""", positive)
    seed: int = knob(-1, """Seeds this node's randomness (timers, peer choice, mini-batches), for
        reproducible runs. -1: random at each start.""", integer(-1), flag="--seed")
    log_level: str = knob("INFO", "DEBUG | INFO | WARNING | ERROR.", _log_level, flag="--log-level")
    model: ModelSection = section(ModelSection, ModelSection.__doc__ or "")
    data: DataSection = section(DataSection, DataSection.__doc__ or "")
    gossip: GossipConfig = section(GossipConfig, """The gossip-learning protocol: how often this node
        pushes its model and how it merges what it receives. Times in seconds.""",
        flags={"interval": "--gossip-interval", "merge": "--merge", "codec": "--codec", "partitions": "--partitions",
               "subsample": "--subsample", "flow": "--flow"})
    peer_sampling: CyclonConfig = section(CyclonConfig, """Cyclon peer sampling: the small, constantly
        reshuffled view of the network from which gossip partners are drawn. Times in seconds.""",
        flags={"interval": "--shuffle-interval"}, examples={"pending_timeout": 20.0, "reseed_interval": 50.0})
    security: SecuritySection = section(SecuritySection, SecuritySection.__doc__ or "")
    tls: TLSSection = section(TLSSection, TLSSection.__doc__ or "")

    def __post_init__(self) -> None:
        check_knobs(self)
        host, _ = split_listen(self.listen)
        if not self.advertise and host in ("0.0.0.0", "::"):
            raise KnobError("", "advertise", f"required when listen is {self.listen} (peers need a reachable URL)")
        if not self.security.keyring and not self.security.insecure and not is_loopback(host):
            # Secure by default: a node other machines can reach must not take models from anyone.
            raise KnobError("", "security.keyring", (
                f"required when listen is {self.listen}, which other machines can reach: make a key with "
                "`gossip keygen -o FILE`, copy FILE to every node and set [security] keyring = \"FILE\" "
                "(or set [security] insecure = true to run without keys)"))
        if self.advertise:
            scheme = parse_address(self.advertise).scheme
            if scheme != ("https" if self.tls.enabled else "http"):
                raise KnobError("", "advertise", (
                    f"{self.advertise} says {scheme}://, but this node serves "
                    f"{'HTTPS ([tls] cert is set)' if self.tls.enabled else 'plain HTTP ([tls] cert is unset)'}"))
        policy = PeerPolicy.from_cidrs(self.security.peer_allow)
        for url in self.join:
            try:
                policy.check(url)
            except AddressError as exc:
                raise KnobError("", "join", str(exc)) from None

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SETTINGS, TABLES = settings_of(NodeConfig)

EXAMPLE_HEADER = """/etc/gossipd/gossipd.toml: configuration of one gossipd node.

Every key is documented below with its flag (if it has one), its GOSSIPD_*
environment variable and its default; flag > environment > this file >
default. The systemd units set GOSSIPD_STATE_DIR, so under systemd state_dir
below is only documentation. For the template unit gossipd@NAME.service, copy
this file to /etc/gossipd/NAME.toml and give each instance its own listen
port.

Generated by `gossipd --print-config-example` from the declarations in
gossipd/daemon/config.py (and the core's GossipConfig, CyclonConfig and
LearnerConfig): change the text there, then run `make docs`."""


def example_config() -> str:
    """The documented example configuration (``systemd/gossipd.toml``)."""
    return render_example(SETTINGS, TABLES, EXAMPLE_HEADER, ENV_PREFIX)


def warn_stderr(line: str) -> None:
    print(f"gossipd: {line}", file=sys.stderr)


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    warn: Callable[[str], None] = warn_stderr,
) -> NodeConfig:
    """Build a NodeConfig: defaults < file < environment < ``overrides`` (dotted keys).

    ``warn`` receives one line per deprecated spelling used.
    """
    layers = Layered()
    if path is not None:
        layer_file(layers, SETTINGS, TABLES, Path(path), warn)
    layer_env(layers, SETTINGS, env or {}, ENV_PREFIX, warn)
    layer_overrides(layers, SETTINGS, overrides or {})
    config: NodeConfig = build(NodeConfig, layers)
    return config
