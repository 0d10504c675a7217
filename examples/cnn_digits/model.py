"""A user's own torch module for gossipd: a small convolutional net for 8x8 digit images.

gossipd calls ``make(schema)`` once per node; ``schema.input_shape`` is
``(1, 8, 8)`` for the bundled digits and ``schema.n_outputs`` the number of
classes. Every node must build the same architecture: its parameter names,
shapes and dtypes are the model's fingerprint.

Use it with any gossipd command that takes ``--model``::

    gossip simulate --dataset digits --model python:examples/cnn_digits/model.py:make
"""

import torch
from torch import nn


class DigitsCNN(nn.Module):
    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 8, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.head = nn.Linear(16 * 2 * 2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # 8x8 -> 4x4
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # 4x4 -> 2x2
        return self.head(x.flatten(1))


def make(schema):
    channels, height, width = schema.input_shape
    if (height, width) != (8, 8):
        raise ValueError(f"DigitsCNN expects 8x8 images, got {height}x{width}")
    return DigitsCNN(channels, schema.n_outputs)
