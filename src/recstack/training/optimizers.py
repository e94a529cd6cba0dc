"""Optimizers with the Keras defaults the TFRS numbers depend on."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def Adagrad(params: Iterable[torch.nn.Parameter], lr: float = 0.001,
            initial_accumulator_value: float = 0.1, eps: float = 1e-7,
            weight_decay: float = 0.0, fused: bool = True) -> torch.optim.Adagrad:
    """Keras ``tf.keras.optimizers.Adagrad``: accumulator starts at 0.1, epsilon 1e-7.

    Update: a += g^2; w -= lr * g / (sqrt(a) + eps) — the same rule as
    ``torch.optim.Adagrad``, only the defaults differ. Uses torch's fused kernel (one
    pass over all parameters; ~3x faster steps for the tutorials' many small tensors)
    when ``fused`` and this torch has it, the per-tensor loop otherwise; both compute the
    rule above (results agree to float32 rounding). Pass ``fused=False`` for embeddings
    with ``sparse=True`` gradients (the fused kernel takes dense gradients only).
    """
    params = list(params)
    kwargs = {"lr": lr, "initial_accumulator_value": initial_accumulator_value, "eps": eps,
              "weight_decay": weight_decay}
    if not fused:
        return torch.optim.Adagrad(params, **kwargs)
    try:
        return torch.optim.Adagrad(params, fused=True, **kwargs)
    except (TypeError, RuntimeError, ValueError):  # torch < 2.4, or parameters the fused kernel rejects
        return torch.optim.Adagrad(params, **kwargs)
