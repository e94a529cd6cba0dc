"""Optimizers with the Keras defaults the TFRS numbers depend on."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def Adagrad(params: Iterable[torch.nn.Parameter], lr: float = 0.001,
            initial_accumulator_value: float = 0.1, eps: float = 1e-7) -> torch.optim.Adagrad:
    """Keras ``tf.keras.optimizers.Adagrad``: accumulator starts at 0.1, epsilon 1e-7.

    Update: a += g^2; w -= lr * g / (sqrt(a) + eps) — the same rule as
    ``torch.optim.Adagrad``, only the defaults differ.
    """
    return torch.optim.Adagrad(params, lr=lr, initial_accumulator_value=initial_accumulator_value, eps=eps)
