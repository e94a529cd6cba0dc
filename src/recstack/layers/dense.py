"""Dense layers and MLP towers with Keras defaults (glorot-uniform kernel, zero bias)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU,
    "gelu": nn.GELU, "selu": nn.SELU, "identity": nn.Identity, "linear": nn.Identity,
}


def make_activation(name: str | None) -> nn.Module:
    """An activation module by name ("relu", "sigmoid", "tanh", "elu", "gelu", "selu", "identity")."""
    if name is None:
        return nn.Identity()
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"Unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}.") from None


class Dense(nn.Linear):
    """``nn.Linear`` with Keras init and optional L2 on the kernel.

    y = activation(x W^T + b); W ~ glorot_uniform, b = 0. Input [..., in] -> [..., out].
    """

    def __init__(self, in_features: int, out_features: int, activation: str | None = None,
                 bias: bool = True, l2: float = 0.0):
        super().__init__(in_features, out_features, bias=bias)
        self.act = make_activation(activation)
        self.l2 = float(l2)

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))

    def regularization_loss(self) -> torch.Tensor:
        if self.l2 == 0.0:
            return self.weight.new_zeros(())
        return self.l2 * self.weight.pow(2).sum()


class MLP(nn.Sequential):
    """Dense layers of ``layer_sizes``: ``activation`` on all but the last, none on the last.

    This is the tower head of the TFRS deep-retrieval tutorial. Input [..., in_features]
    -> output [..., layer_sizes[-1]].
    """

    def __init__(self, in_features: int, layer_sizes: Sequence[int], activation: str = "relu",
                 final_activation: str | None = None, l2: float = 0.0):
        if not layer_sizes:
            raise ValueError("layer_sizes must name at least one layer width.")
        layers = []
        width = in_features
        for i, size in enumerate(layer_sizes):
            last = i == len(layer_sizes) - 1
            layers.append(Dense(width, int(size), activation=final_activation if last else activation, l2=l2))
            width = int(size)
        super().__init__(*layers)
        self.out_features = width
