"""Find a user's function named by ``python:PATH.py:NAME`` or ``pkg.module:NAME``.

Used for model factories (``--model``) and data loaders (``--dataset``). The
file form loads the file under a private module name (its path's hash), once
per process; the module form is an ordinary import. Every failure is a
:class:`PluginError` whose message names the file or module and the function.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

_LOADED: dict[str, ModuleType] = {}


class PluginError(ValueError):
    """A plugin that cannot be loaded or does not do what it must."""


def _load_file(path_text: str) -> ModuleType:
    path = Path(path_text).expanduser().resolve()
    key = str(path)
    if key in _LOADED:
        return _LOADED[key]
    if not path.is_file():
        raise PluginError(f"file {path_text} not found")
    name = "gossipd_plugin_" + hashlib.sha256(key.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path_text} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code may raise anything at import
        del sys.modules[name]
        raise PluginError(f"importing {path_text} failed: {type(exc).__name__}: {exc}") from None
    _LOADED[key] = module
    return module


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise PluginError(f"cannot import module {name!r} ({exc})") from None
    except Exception as exc:
        raise PluginError(f"importing module {name!r} failed: {type(exc).__name__}: {exc}") from None


def resolve(kind: str, target: str, attr: str) -> Callable[..., Any]:
    """The callable ``attr`` of file ``target`` (kind ``python``) or module ``target`` (``module``)."""
    module = _load_file(target) if kind == "python" else _import(target)
    where = target if kind == "python" else f"module {target}"
    fn = getattr(module, attr, None)
    if fn is None:
        raise PluginError(f"{where} has no function {attr!r}")
    if not callable(fn):
        raise PluginError(f"{where}: {attr!r} is not callable")
    return fn


def split_reference(text: str) -> tuple[str, str, str] | None:
    """``python:PATH.py:NAME`` -> ("python", PATH.py, NAME); ``pkg.mod:NAME`` -> ("module", ...);
    None if ``text`` is neither (e.g. a plain file path)."""
    if text.startswith("python:"):
        path, sep, attr = text[len("python:"):].rpartition(":")
        if sep and path.endswith(".py") and attr.isidentifier():
            return "python", path, attr
        return None
    mod, sep, attr = text.partition(":")
    if sep and attr.isidentifier() and all(p.isidentifier() for p in mod.split(".")):
        return "module", mod, attr
    return None
