"""Any ``torch.nn.Module`` as a gossip model: the built-in ``cnn`` and user plugins.

A factory (``python:PATH.py:FACTORY``, ``pkg.module:FACTORY`` or the built-in
:func:`cnn_factory`) is called once with the data's :class:`Schema` and returns
a module whose ``forward`` maps a batch shaped ``(n, *schema.input_shape)`` to
``(n, n_classes)`` logits or ``(n, 1)`` / ``(n,)`` standardised values; it may
return ``(module, loss)`` where ``loss(output, target)`` is a scalar (target:
class indices, or standardised values shaped like the output).

The module's parameters, then its floating-point buffers (e.g. BatchNorm
running statistics), make ONE flat float32 vector, in ``named_parameters`` /
``named_buffers`` order: that vector is what travels and what merges, buffers
averaged like parameters. Integer buffers (BatchNorm's ``num_batches_tracked``)
stay local; a BatchNorm with ``momentum=None`` (a cumulative average that
depends on that counter) is refused.

Training runs the module with :func:`torch.func.functional_call` over views into
the flat vector, so the gradient comes out flat and the optimiser works on one
tensor. The module's own randomness (dropout) draws from a torch generator
seeded from the node's rng inside ``torch.random.fork_rng``, so a run stays
reproducible and the global torch stream is left as it was.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gossipd.core.learner_base import LearnerBase
from gossipd.core.local_data import LocalData
from gossipd.core.plugin import PluginError, resolve
from gossipd.core.scaling import FeatureStats, Scaling
from gossipd.core.spec import LearnerConfig, ModelSpec, Schema, format_shape
from gossipd.core.state import ModelState

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cnn_factory(schema: Schema, channels: tuple[int, ...] = (16, 32)) -> nn.Module:
    """The built-in ``cnn``: per channel count a 3x3 convolution, ReLU and (while the
    image is at least 2x2) a 2x2 max-pool, then one linear layer."""
    if len(schema.input_shape) != 3:
        raise ValueError(f"model 'cnn' needs image-shaped data (channels x height x width); this data has "
                         f"input shape {format_shape(schema.input_shape)} (set the input shape, e.g. 1x8x8)")
    c, h, w = schema.input_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU()]
        c = out
        if h >= 2 and w >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, schema.n_outputs)]
    return nn.Sequential(*layers)


def default_loss(task: str) -> Loss:
    if task == "classification":
        return F.cross_entropy

    def half_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Half the squared error: the same step sizes suit regression and classification.
        return 0.5 * F.mse_loss(out, target)

    return half_mse


def load_factory(model: ModelSpec) -> Callable[[Schema], Any]:
    if model.kind == "cnn":
        return lambda schema: cnn_factory(schema, model.widths)
    if not model.is_plugin:
        raise ValueError(f"model {model.text!r} is not a torch module factory")
    try:
        return resolve(model.kind, model.target, model.attr)
    except PluginError as exc:
        raise PluginError(f"model {model.text!r}: {exc}") from None


class ModuleLearner(LearnerBase):
    """A torch module trained by autograd, parameters and float buffers as one flat vector."""

    def __init__(self, model: ModelSpec, schema: Schema, config: LearnerConfig | None = None,
                 scaling: Scaling | None = None, factory: Callable[[Schema], Any] | None = None) -> None:
        super().__init__(model, schema, config, scaling)
        factory = factory or load_factory(model)
        with torch.random.fork_rng(devices=[]):
            # The module's own initialisation, the same on every node with the same init_seed.
            torch.default_generator.manual_seed(self.config.init_seed)
            try:
                made = factory(schema)
            except (ValueError, PluginError):
                raise
            except Exception as exc:  # the user's factory may raise anything
                raise PluginError(f"model {self.spec!r}: the factory failed: {type(exc).__name__}: {exc}") from None
        module, loss = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
        if not isinstance(module, nn.Module):
            raise PluginError(f"model {self.spec!r}: the factory must return a torch.nn.Module "
                              f"(or (module, loss)), got {type(module).__name__}")
        if loss is not None and not callable(loss):
            raise PluginError(f"model {self.spec!r}: the loss the factory returned is not callable")
        self.module = module.float()
        self.loss: Loss = loss or default_loss(schema.task)
        self._refuse_unmergeable()
        self.param_names = [(n, tuple(p.shape)) for n, p in self.module.named_parameters()]
        self.buffer_names = [(n, tuple(b.shape)) for n, b in self.module.named_buffers() if b.is_floating_point()]
        self._local_buffers = {n: b for n, b in self.module.named_buffers() if not b.is_floating_point()}
        self.n_trainable = sum(math.prod(s) for _, s in self.param_names)
        self.n_params = self.n_trainable + sum(math.prod(s) for _, s in self.buffer_names)
        if self.n_trainable == 0:
            raise PluginError(f"model {self.spec!r}: the module has no parameters to learn")
        self._initial = np.concatenate(
            [p.detach().reshape(-1).numpy() for _, p in self.module.named_parameters()]
            + [b.detach().reshape(-1).numpy() for b in self.module.buffers() if b.is_floating_point()]
        ).astype(np.float32)
        self.fingerprint = self._fingerprint()
        self._check_output()

    # -- structure ------------------------------------------------------------------------

    def _refuse_unmergeable(self) -> None:
        for name, m in self.module.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None:
                raise PluginError(f"model {self.spec!r}: BatchNorm {name or 'module'} has momentum=None "
                                  "(a cumulative average over a local counter); give it a momentum")
        for name, p in self.module.named_parameters():
            if p.dtype != torch.float32:
                raise PluginError(f"model {self.spec!r}: parameter {name} is {p.dtype}, not float32")

    def _fingerprint(self) -> str:
        mods = ";".join(f"{n}:{type(m).__name__}" for n, m in self.module.named_modules())
        params = ";".join(f"{n}:{format_shape(s)}:float32" for n, s in self.param_names)
        bufs = ";".join(f"{n}:{format_shape(s)}:float32" for n, s in self.buffer_names)
        text = f"torch|{mods}|params={params}|buffers={bufs}|{self._identity()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _tensors(self, flat: torch.Tensor, buffers: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        pos = 0
        for name, shape in self.param_names:
            k = math.prod(shape)
            out[name] = flat[pos: pos + k].view(shape)
            pos += k
        pos = 0
        for name, shape in self.buffer_names:
            k = math.prod(shape)
            out[name] = buffers[pos: pos + k].view(shape)
            pos += k
        out.update(self._local_buffers)
        return out

    def _reshape(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.schema.input_shape)

    def _check_output(self) -> None:
        """Run the module once on zeros, so a shape mistake is reported at start, by name."""
        want = f"(batch, {self.n_outputs})" + (" or (batch,)" if self.task == "regression" else "")
        try:
            out = self._forward(self.initial_state(), np.zeros((2, self.n_features), np.float32))
        except Exception as exc:  # the user's forward may raise anything
            raise PluginError(f"model {self.spec!r}: forward on a batch shaped "
                              f"(2, {format_shape(self.schema.input_shape)}) failed: "
                              f"{type(exc).__name__}: {exc}") from None
        if tuple(out.shape) != (2, self.n_outputs):
            raise PluginError(f"model {self.spec!r}: the module's output has shape {tuple(out.shape)} "
                              f"for a batch of 2; the {self.task} task needs {want}")

    def build_module(self, state: ModelState | None = None) -> nn.Module:
        """A copy of the module holding ``state``, in eval mode, taking flat scaled rows
        (image-shaped models get an ``Unflatten`` in front): for export."""
        with self.lock:  # not while training swaps views into the template (functional_call)
            module = copy.deepcopy(self.module)
        if state is not None:
            self.check(state)
            values = torch.from_numpy(np.array(state.params))
            tensors = self._tensors(values[: self.n_trainable], values[self.n_trainable:])
            with torch.no_grad():
                for name, t in module.named_parameters():
                    t.copy_(tensors[name])
                for name, t in module.named_buffers():
                    if t.is_floating_point():
                        t.copy_(tensors[name])
        if len(self.schema.input_shape) > 1:
            module = nn.Sequential(nn.Unflatten(1, self.schema.input_shape), module)
        return module.eval()

    # -- states --------------------------------------------------------------------------

    def initial_state(self) -> ModelState:
        return ModelState(self._initial, 0.0)

    # -- training -------------------------------------------------------------------------

    def update(self, state: ModelState, data: LocalData, rng: np.random.Generator,
               stats: FeatureStats | None = None) -> ModelState:
        """One pass over ``data`` in mini-batches; age grows by the examples seen."""
        inputs = self._training_inputs(state, data, stats)
        if inputs is None:
            return state
        X, T = self._reshape(torch.from_numpy(inputs[0])), torch.from_numpy(inputs[1])
        if self.task == "classification":
            T = torch.from_numpy(data.y)  # cross-entropy takes class indices
        n = len(data)
        bs = self.config.batch_size
        order = torch.from_numpy(rng.permutation(n))
        seed = int(rng.integers(2**63))
        values = np.array(state.params)
        flat = torch.from_numpy(values[: self.n_trainable]).requires_grad_(True)
        buffers = torch.from_numpy(values[self.n_trainable:])
        opt = _Optimizer(self.config, flat)
        age = state.age
        with self.lock, torch.random.fork_rng(devices=[]):
            # CPU generator only: torch.manual_seed would also seed (lazily, at a cost of
            # ~1 ms per call) every accelerator backend.
            torch.default_generator.manual_seed(seed)
            _set_mode(self.module, training=True)
            for idx in _batches(order, bs):
                out = functional_call(self.module, self._tensors(flat, buffers), (X[idx],))
                tb = T[idx]
                if out.dim() == 1 and tb.dim() == 2:
                    tb = tb[:, 0]
                (grad,) = torch.autograd.grad(self.loss(out, tb), flat)
                opt.step(grad, self.lr_at(age))
                age += int(idx.shape[0])
        params = values  # flat and buffers are views of it, updated in place
        if not np.isfinite(params).all():
            return state  # a diverged step must not poison the network
        return ModelState.owned(params, age)

    # -- evaluation ------------------------------------------------------------------------

    def _forward(self, state: ModelState, x: np.ndarray) -> np.ndarray:
        values = torch.from_numpy(np.array(state.params))
        with self.lock, torch.no_grad():
            _set_mode(self.module, training=False)
            out = functional_call(self.module, self._tensors(values[: self.n_trainable], values[self.n_trainable:]),
                                  (self._reshape(torch.from_numpy(x)),))
        out = out.reshape(x.shape[0], -1) if out.dim() == 1 else out
        return out.numpy()


def _batches(order: torch.Tensor, size: int) -> list[torch.Tensor]:
    """``order`` in mini-batches of ``size``; a last batch of one example joins the one
    before it, since BatchNorm cannot train on a single example."""
    batches = list(order.split(size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def _set_mode(module: nn.Module, training: bool) -> None:
    # Module.train() walks every submodule; most calls here would not change anything.
    if module.training != training:
        module.train(training)


class _Optimizer:
    """SGD (with weight decay) or Adam on one flat tensor; state lives for one local pass."""

    def __init__(self, config: LearnerConfig, flat: torch.Tensor) -> None:
        self.config = config
        self.flat = flat
        self.t = 0
        if config.optimizer == "adam":
            self.m = torch.zeros_like(flat)
            self.v = torch.zeros_like(flat)

    def step(self, grad: torch.Tensor, lr: float) -> None:
        wd = self.config.weight_decay
        with torch.no_grad():
            if wd:
                grad = grad.add(self.flat, alpha=wd)
            if self.config.optimizer == "sgd":
                self.flat.add_(grad, alpha=-lr)
                return
            b1, b2, eps = 0.9, 0.999, 1e-8
            self.t += 1
            self.m.mul_(b1).add_(grad, alpha=1 - b1)
            self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            m_hat = self.m / (1 - b1 ** self.t)
            v_hat = self.v / (1 - b2 ** self.t)
            self.flat.add_(m_hat / (v_hat.sqrt_() + eps), alpha=-lr)
