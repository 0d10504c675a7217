"""A user's own torch module (conv + linear), as a user would write it: outside the
package, loaded by ``--model python:tests/plugins/user_conv.py:make``. The acceptance
tests and ``bench/acceptance_models.py`` train and export it."""

import torch
from torch import nn

class ConvNet(nn.Module):
    def __init__(self, channels, n_out):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, kernel_size=3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, n_out)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(x.flatten(1))

def make(schema):
    return ConvNet(schema.input_shape[0], schema.n_outputs)
