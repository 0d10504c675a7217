"""Peer address syntax, the peer_allow policy and the screening of received messages (pure)."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipd import wire
from gossipd.addresses import AddressError, PeerPolicy, parse_address, screen_message
from gossipd.core.messages import ModelMessage, PeerDescriptor, ShuffleReply, ShuffleRequest
from gossipd.wire import WireError

ANY = PeerPolicy()
SEEDED = settings(derandomize=True, deadline=None, max_examples=200)


@pytest.mark.parametrize(
    "text, host, port, ip",
    [
        ("http://10.0.0.1:7070", "10.0.0.1", 7070, "10.0.0.1"),
        ("https://node-1.example.org:443", "node-1.example.org", 443, None),
        ("http://[2001:db8::1]:7070", "2001:db8::1", 7070, "2001:db8::1"),
        ("http://localhost:1", "localhost", 1, None),
        ("http://a:65535", "a", 65535, None),
        ("http://xn--bcher-kva.example:80", "xn--bcher-kva.example", 80, None),
    ],
)
def test_good_addresses(text, host, port, ip):
    peer = parse_address(text)
    assert (peer.host, peer.port) == (host, port)
    assert peer.ip == (None if ip is None else ipaddress.ip_address(ip))
    assert peer.url == text  # canonical in, canonical out


@pytest.mark.parametrize(
    "text, words",
    [
        ("file:///etc/passwd", "scheme"),
        ("ftp://10.0.0.1:21", "scheme"),
        ("HTTP://10.0.0.1:7070", "scheme"),
        ("10.0.0.1:7070", "scheme"),
        ("gopher://x:70", "scheme"),
        ("http://user:pw@10.0.0.1:7070", "user info"),
        ("http://10.0.0.1:7070/", "path"),
        ("http://10.0.0.1:7070/v1/admin", "path"),
        ("http://10.0.0.1:7070?x=1", "query"),
        ("http://10.0.0.1:7070#frag", "fragment"),
        ("http://10.0.0.1:7070\\evil", "backslash"),
        ("http://10.0.0.1", "port is missing"),
        ("http://10.0.0.1:", "port must be"),
        ("http://10.0.0.1:0", "port must be"),
        ("http://10.0.0.1:65536", "port must be"),
        ("http://10.0.0.1:07070", "port must be"),
        ("http://10.0.0.1:+80", "port must be"),
        ("http://10.0.0.1:80 ", "spaces"),
        ("http://[::1]", "[IPv6]:PORT"),
        ("http://[::1:7070", "[IPv6]:PORT"),
        ("http://[fe80::1%eth0]:7070", "zone ids"),
        ("http://[2001:DB8::1]:7070", "[2001:db8::1]"),
        ("http://[2001:db8:0::1]:7070", "[2001:db8::1]"),
        ("http://::1:7070", "brackets"),
        ("http://2130706433:7070", "127.0.0.1"),
        ("http://0x7f.1:7070", "127.0.0.1"),
        ("http://0177.0.0.1:7070", "127.0.0.1"),
        ("http://127.1:7070", "127.0.0.1"),
        ("http://010.0.0.1:7070", "8.0.0.1"),
        ("http://Node1:7070", "lower case"),
        ("http://node_1:7070", "not a host name"),
        ("http://-node:7070", "not a host name"),
        ("http://node.:7070", "not a host name"),
        ("http://a..b:7070", "not a host name"),
        ("http://:7070", "not a host name"),
        ("http://1.2.3.4.5:7070", "neither"),
        ("http://bücher.example:80", "ASCII"),
        ("http://x\x00y:80", "printable"),
        ("http://" + "a" * 250 + ":80", "characters"),
        ("", "characters"),
    ],
)
def test_bad_addresses(text, words):
    with pytest.raises(AddressError) as info:
        parse_address(text)
    assert words in str(info.value)


def test_non_string_address():
    with pytest.raises(AddressError, match="must be a string"):
        parse_address(7)


@SEEDED
@given(st.text(max_size=80))
def test_random_text_is_either_refused_or_canonical(text):
    try:
        peer = parse_address(text)
    except AddressError:
        return
    assert peer.url == text and text.startswith(("http://", "https://"))


@SEEDED
@given(st.ip_addresses(), st.integers(1, 65535), st.sampled_from(["http", "https"]))
def test_every_canonical_ip_address_parses(ip, port, scheme):
    text = f"{scheme}://{f'[{ip}]' if ip.version == 6 else ip}:{port}"
    assert parse_address(text).ip == ip


# ------------------------------------------------------------------------ policy


@pytest.mark.parametrize(
    "address",
    [
        "http://169.254.169.254:80",
        "http://169.254.0.1:7070",
        "http://[fe80::1]:7070",
        "http://[fd00:ec2::254]:80",
        "http://100.100.100.200:80",
        "http://168.63.129.16:80",
        "http://[::ffff:169.254.169.254]:80",  # IPv4-mapped
        "http://[2002:a9fe:a9fe::1]:80",  # 6to4 of 169.254.169.254
        "http://[64:ff9b::a9fe:a9fe]:80",  # NAT64 of 169.254.169.254
    ],
)
def test_link_local_and_metadata_are_refused_by_default(address):
    with pytest.raises(AddressError, match="link-local or cloud metadata"):
        ANY.check(address)
    with pytest.raises(AddressError):  # "any" written out does not unlock them
        PeerPolicy.from_cidrs(["0.0.0.0/0", "::/0"]).check(address)


@pytest.mark.parametrize("address", ["http://0.0.0.0:7070", "http://[::]:7070", "http://224.0.0.1:7070",
                                     "http://[ff02::1]:7070", "http://255.255.255.255:7070",
                                     "http://[::ffff:0.0.0.0]:7070"])
def test_non_unicast_is_always_refused(address):
    policy = PeerPolicy.from_cidrs(["0.0.0.0/0", "::/0", "224.0.0.0/4", "0.0.0.0/8"])
    with pytest.raises(AddressError, match="not a unicast address"):
        policy.check(address)


def test_listing_a_refused_range_on_purpose_allows_it():
    policy = PeerPolicy.from_cidrs(["169.254.10.0/24", "10.0.0.0/8"])
    assert policy.check("http://169.254.10.7:7070").port == 7070
    assert policy.check("http://10.1.2.3:7070").ip == ipaddress.ip_address("10.1.2.3")
    with pytest.raises(AddressError, match="not in peer_allow"):
        policy.check("http://192.168.1.1:7070")
    with pytest.raises(AddressError, match="link-local"):
        PeerPolicy.from_cidrs(["169.254.0.0/15"]).check("http://169.254.169.254:80")  # wider than the range


def test_default_policy_allows_ordinary_and_loopback_addresses():
    for address in ("http://10.0.0.1:7070", "http://127.0.0.1:7070", "https://[2001:db8::1]:443",
                    "http://8.8.8.8:80", "http://[::1]:7070", "http://localhost:7070"):
        assert ANY.check(address).url == address


def test_localhost_names_are_checked_as_loopback_at_once():
    policy = PeerPolicy.from_cidrs(["10.0.0.0/8"])
    for address in ("http://localhost:7070", "http://db.localhost:7070", "http://127.0.0.1:7070"):
        with pytest.raises(AddressError, match="not in peer_allow"):
            policy.check(address)


def test_host_names_are_checked_on_resolution():
    policy = PeerPolicy.from_cidrs(["10.0.0.0/8"])
    assert policy.check("http://node1.example.org:7070").ip is None  # deferred
    ips = ["10.0.0.5", "169.254.169.254", "192.168.0.1", ipaddress.ip_address("10.0.0.6")]
    assert policy.allowed_ips("node1.example.org", ips) == [ipaddress.ip_address("10.0.0.5"),
                                                            ipaddress.ip_address("10.0.0.6")]
    with pytest.raises(AddressError, match="no allowed address.*169.254.169.254"):
        ANY.allowed_ips("rebind.example.org", ["169.254.169.254"])
    with pytest.raises(AddressError, match="did not resolve"):
        ANY.allowed_ips("nothing.example.org", [])


def test_policy_from_config_errors():
    assert PeerPolicy.from_cidrs(["*"]).allow is None
    with pytest.raises(ValueError, match="peer_allow: 'ten' is not an IP network"):
        PeerPolicy.from_cidrs(["10.0.0.0/8", "ten"])
    with pytest.raises(ValueError, match=r'peer_allow: empty.*\["\*"\]'):
        PeerPolicy.from_cidrs([])


# --------------------------------------------------------------------- screening


SENDER = "http://10.0.0.1:7070"


def test_screen_keeps_good_entries_and_drops_bad_ones():
    entries = (PeerDescriptor("http://10.0.0.2:7070", 1), PeerDescriptor("file:///etc/passwd", 0),
               PeerDescriptor("http://169.254.169.254:80", 0), PeerDescriptor("http://10.0.0.3:7070/x", 2),
               PeerDescriptor("http://node4.example.org:7070", 3))
    for cls in (ShuffleRequest, ShuffleReply):
        screened, dropped = screen_message(cls(SENDER, entries), ANY)
        assert type(screened) is cls and screened.sender == SENDER
        assert [e.address for e in screened.entries] == ["http://10.0.0.2:7070", "http://node4.example.org:7070"]
        assert [a for a, _ in dropped] == ["file:///etc/passwd", "http://169.254.169.254:80", "http://10.0.0.3:7070/x"]
        assert all(reason for _, reason in dropped)


def test_screen_returns_clean_messages_unchanged():
    msg = ShuffleRequest(SENDER, (PeerDescriptor("http://10.0.0.2:7070", 1),))
    assert screen_message(msg, ANY) == (msg, ())
    model = ModelMessage(SENDER, "arch", 1.0, np.zeros(2, np.float32))
    assert screen_message(model, ANY)[0] is model


@pytest.mark.parametrize("sender, status, code", [
    ("http://evil.example.org:80/admin", 400, "bad_sender"),
    ("file:///etc/passwd", 400, "bad_sender"),
    ("http://169.254.169.254:80", 403, "peer_not_allowed"),
])
def test_screen_refuses_a_bad_sender(sender, status, code):
    for msg in (ModelMessage(sender, "arch", 1.0, np.zeros(2, np.float32)), ShuffleReply(sender, ())):
        with pytest.raises(WireError) as info:
            screen_message(msg, ANY)
        assert (info.value.status, info.value.code) == (status, code)
        assert sender in info.value.detail


def test_addresses_within_wire_limits():
    longest = "http://" + "a" * (wire.MAX_ADDRESS_LEN - len("http://:1")) + ":1"
    with pytest.raises(AddressError, match="not a host name"):  # a 63-character label limit, not length
        parse_address(longest)
    ok = "http://" + ".".join(["a" * 60] * 4) + ":1"
    assert len(ok) <= wire.MAX_ADDRESS_LEN and parse_address(ok).port == 1
