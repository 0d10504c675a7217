"""The installed gossipd version (the daemon's /v1/status, ``gossipd --version``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("gossipd")
except PackageNotFoundError:  # running from a source tree
    VERSION = "0+unknown"
