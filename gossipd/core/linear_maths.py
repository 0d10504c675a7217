"""The maths of a Linear/ReLU stack in numpy: forward, hand-written backprop, SGD step.

Plain functions over float32 arrays, so that a daemon with a built-in model
(``logreg``, ``mlp:...``) needs no torch, and so that other engines can reuse
them. Every function takes optional leading "node" axes: parameters shaped
``(..., n_params)`` give weights ``(..., out, in)`` and biases ``(..., out)``,
inputs ``(..., n, in)``; one call then works on a batch of models at once
(matrix products broadcast over the leading axes).

Layout (``nn.Linear``'s): for each layer, the ``(out, in)`` weight row-major,
then the bias, one layer after the other in one flat vector. The loss is the
mean over the ``n`` examples of the softmax cross-entropy (classification) or
half the squared error (regression); at the output both have the gradient
``p - t`` (``p``: softmax probabilities, or the raw output), so one backward
loop serves both. ``tests/test_learner.py`` checks the step against torch
autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: ``(out, in)`` per layer.
Shapes = Sequence[tuple[int, int]]
#: ``(W, b)`` per layer: views into the flat parameters.
Layers = list[tuple[np.ndarray, np.ndarray]]


def layer_shapes(widths: Sequence[int]) -> list[tuple[int, int]]:
    """``(n_features, *hidden, n_outputs)`` -> ``(out, in)`` per layer."""
    return [(o, i) for i, o in zip(widths[:-1], widths[1:])]


def n_params(shapes: Shapes) -> int:
    return sum(o * i + o for o, i in shapes)


def layer_views(flat: np.ndarray, shapes: Shapes) -> Layers:
    """Views ``(W, b)`` per layer into ``flat`` ``(..., n_params)``: writing them writes ``flat``."""
    lead = flat.shape[:-1]
    layers, pos = [], 0
    for o, i in shapes:
        w = flat[..., pos: pos + o * i].reshape(*lead, o, i)
        pos += o * i
        layers.append((w, flat[..., pos: pos + o]))
        pos += o
    return layers


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x @ W^T + b``: ``(..., n, in)`` -> ``(..., n, out)``."""
    z = np.matmul(x, np.swapaxes(w, -1, -2))
    z += b[..., None, :]
    return z


def forward(x: np.ndarray, layers: Layers) -> np.ndarray:
    """The stack's output (logits or standardised values): ReLU between layers, none after the last."""
    for j, (w, b) in enumerate(layers):
        x = linear(x, w, b)
        if j < len(layers) - 1:
            np.maximum(x, 0.0, out=x)
    return x


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numerically stable)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _per_node(value: float | np.ndarray, extra_dims: int) -> float | np.ndarray:
    """A scalar, or one value per model ``(...)`` shaped to broadcast over ``extra_dims`` more axes."""
    if np.ndim(value) == 0:
        return float(value)
    return np.asarray(value, dtype=np.float32).reshape(np.shape(value) + (1,) * extra_dims)


def sgd_step(layers: Layers, x: np.ndarray, target: np.ndarray, lr: float | np.ndarray,
             weight_decay: float, classification: bool, mask: np.ndarray | None = None) -> None:
    """One SGD step on the mean loss over the ``n`` rows of ``x``, in place on ``layers``.

    ``x`` ``(..., n, in)`` scaled inputs, ``target`` ``(..., n, out)`` one-hot
    classes or standardised values; ``lr`` a scalar or one per model ``(...)``.
    The weight decay shrinks each weight by ``lr * weight_decay`` (biases are
    not decayed), as torch's SGD with ``weight_decay`` does for the weights.
    ``mask`` ``(..., n)``: 1 for a real row, 0 for padding (models of a batch
    holding different numbers of examples); the mean is then over each model's
    real rows, and padding contributes nothing. Every model needs a real row.
    """
    acts = [x]
    for j, (w, b) in enumerate(layers):
        z = linear(acts[-1], w, b)
        if j < len(layers) - 1:
            np.maximum(z, 0.0, out=z)
        acts.append(z)
    out = acts[-1]
    delta = softmax(out) if classification else out.copy()
    delta -= target
    n: int | np.ndarray = x.shape[-2]
    if mask is not None:
        delta *= mask[..., None]
        n = mask.sum(axis=-1)
    scale_w = _per_node(-np.asarray(lr) / n, 2)
    scale_b = _per_node(-np.asarray(lr) / n, 1)
    decay = _per_node(1.0 - np.asarray(lr) * weight_decay, 2)
    for j in range(len(layers) - 1, -1, -1):
        w, b = layers[j]
        a_prev = acts[j]
        back = np.matmul(delta, w) if j > 0 else None  # with w before its update
        b += scale_b * delta.sum(axis=-2)
        grad_w = np.matmul(np.swapaxes(delta, -1, -2), a_prev)
        grad_w *= scale_w
        if weight_decay:
            w *= decay
        w += grad_w
        if back is not None:
            back *= a_prev > 0
            delta = back


def fold_scaling(layers: Layers, shift: np.ndarray, inv_scale: np.ndarray) -> Layers:
    """New layers computing on RAW inputs what ``layers`` compute on ``(x - shift) * inv_scale``:
    the first layer becomes ``W * inv_scale`` and ``b - (W * inv_scale) @ shift``.
    ``shift``, ``inv_scale``: ``(..., in)``, one per model."""
    (w, b), rest = layers[0], layers[1:]
    w2 = w * inv_scale[..., None, :]
    b2 = b - np.matmul(w2, shift[..., :, None])[..., 0]
    return [(w2, b2), *rest]
