"""Mult-VAE (Liang, Krishnan, Hoffman & Jebara 2018, "Variational Autoencoders for Collaborative
Filtering"): a variational autoencoder over users' multi-hot item rows with a multinomial likelihood.

For a user row x ∈ {0, 1}^V (the items of the user's training interactions):

    x̃ = dropout(x / ||x||₂, p)                                 input dropout (training only)
    h = tanh(... tanh(W₁ x̃ + b₁) ...)                          encoder widths ``hidden_sizes``
    [μ, log σ²] = W_e h + b_e                                    2 x latent_dim
    z = μ + noise_std · ε ⊙ σ,  ε ~ N(0, I)                      training; z = μ at evaluation
    g = tanh(... tanh(D₁ z + c₁) ...)                            decoder widths reversed(hidden_sizes)
    logits = D_o g + c_o,  π = softmax(logits)                   [V]

Loss of a batch of B rows (the negative ELBO with annealed β, the paper's eq. 6/7):

    loss = -(1/B) Σ_b Σ_j x_bj log π_bj  +  β · (1/B) Σ_b ½ Σ_k (σ²_bk + μ²_bk - 1 - log σ²_bk)

with β = min(beta_max, step / total_anneal_steps) after ``step`` training batches
(``total_anneal_steps`` 0: β = beta_max throughout). The step counter is a buffer, so a resumed
run continues the schedule. Weight decay is the optimiser's, or ``l2`` (``l2 ||W||²`` per weight
matrix, as the paper's λ).

Factorised form: the decoder's output layer is linear, so the logit of item j for user u is
``[g_u, 1] · [D_o[j], c_o[j]]``; :meth:`user_embeddings` returns ``[g_u, 1]`` (g from μ of the
user's training row: deterministic) and :meth:`item_embeddings` ``[D_o[j], c_o[j]]``, so the
retrieval metrics, indexes, bundles and ``recommend`` use the model like any two-tower model.
Softmax is increasing, so ranking by logits ranks by π. :meth:`fold_in` is the same query for
any multi-hot history (a new user, or a user's history with later items): no retraining.

Options from RecVAE (Shenbin et al. 2020, "RecVAE: a New Variational Autoencoder for Top-N
Recommendations with Implicit Feedback"), off by default: ``encoder: recvae`` replaces the encoder
with RecVAE's (swish activations, layer normalisation, each layer's input summed with every earlier
layer's output), ``decoder_sizes: []`` makes the decoder one linear layer (RecVAE's), ``beta_per_item``
> 0 scales each user's KL weight by the size of the row (β_u = beta_per_item · |x_u|, RecVAE's
γ·|x_u|) instead of the annealed β. ``prior: composite`` replaces N(0, I) in the KL term by RecVAE's
composite prior, per latent dimension the mixture

    p(z | x) = 0.15 N(z; 0, 1) + 0.75 N(z; μ_old(x), σ²_old(x)) + 0.10 N(z; 0, e^10)

with (μ_old, σ²_old) the posterior of a frozen copy of the encoder (``prior_encoder``, no dropout),
refreshed from the encoder at the start of every update cycle; the KL term is then the one-sample
estimate Σ_k [log q(z_k | x) - log p(z_k | x)] at the sampled z. ``encoder_steps`` > 0 alternates
updates as RecVAE does: cycles of ``encoder_steps`` batches updating only the encoder, then
``decoder_steps`` batches updating only the decoder, without input dropout (the KL term does not
depend on the decoder). The parameters that a phase does not update get no gradient, so the
optimiser (Adam, Adagrad, SGD all skip parameters without a gradient) leaves them and their state
alone. RecVAE cycles per epoch; here a cycle is counted in batches.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core.columns import Batch, Columns
from ..core.errors import ConfigError, DataError
from ..core.exclusions import Exclusions
from ..core.id_lists import IdLists
from ..layers.dense import Dense
from .catalogue_scoring import CatalogueScored

__all__ = ["MultVAE", "RecVAEEncoder", "decoded_query", "log_normal", "multi_hot"]

EncoderKind = Literal["mlp", "recvae"]
PriorKind = Literal["standard", "composite"]

#: RecVAE's composite prior: weights of N(0, 1), the old posterior and the wide N(0, e^10).
COMPOSITE_WEIGHTS = (0.15, 0.75, 0.10)
WIDE_LOGVAR = 10.0


def log_normal(z: torch.Tensor, mu: torch.Tensor | float, logvar: torch.Tensor | float) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar))."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * (logvar + math.log(2 * math.pi) + (z - mu).pow(2) / logvar.exp())


def multi_hot(rows: torch.Tensor, items: torch.Tensor, num_rows: int, num_items: int) -> torch.Tensor:
    """[num_rows, num_items] bool: True at (rows[n], items[n]); repeated pairs count once, item id 0
    (unknown) and out-of-range ids are dropped."""
    rows, items = torch.as_tensor(rows).long().reshape(-1), torch.as_tensor(items).long().reshape(-1)
    keep = (items > 0) & (items < num_items) & (rows >= 0) & (rows < num_rows)
    x = torch.zeros(num_rows, num_items, dtype=torch.bool)
    x[rows[keep], items[keep]] = True
    return x


def decoded_query(encoder: nn.Module, decoder_hidden: nn.Module, latent_dim: int, x: torch.Tensor) -> torch.Tensor:
    """[B, V] multi-hot rows -> [B, H + 1] the fold-in query ``[g(μ(x / ||x||₂)), 1]`` (μ: the first
    ``latent_dim`` outputs of ``encoder``; g: ``decoder_hidden``; no dropout), whose dot product
    with ``[D_o[j], c_o[j]]`` is the decoder's logit for item j. One implementation for
    :meth:`MultVAE.fold_in` and the bundle's ``MultVAEFoldInQuery``."""
    mu = encoder(F.normalize(x.float(), dim=1))[:, :latent_dim]   # an all-zero row stays zero
    g = decoder_hidden(mu)
    return torch.cat([g, g.new_ones(g.shape[0], 1)], dim=1)


class RecVAEEncoder(nn.Module):
    """RecVAE's encoder: ``depth`` swish layers of one width with layer normalisation and dense
    (summed) connections, then the (μ, log σ²) heads on the last layer:

        h₁ = LN(swish(W₁ x̃)),   h_k = LN(swish(W_k h_{k-1} + h₁ + ... + h_{k-1}))   (k = 2 .. depth)
    """

    def __init__(self, in_features: int, hidden: int, depth: int, latent_dim: int, l2: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList([Dense(in_features if k == 0 else hidden, hidden, l2=l2) for k in range(depth)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden, eps=0.1) for _ in range(depth)])   # RecVAE's eps
        self.head = Dense(hidden, 2 * latent_dim, l2=l2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norms[0](F.silu(self.layers[0](x)))
        total = h
        for layer, norm in zip(self.layers[1:], self.norms[1:]):
            h = norm(F.silu(layer(h) + total))
            total = total + h
        return self.head(h)


class MultVAE(CatalogueScored):
    """Mult-VAE over the rows of a user x item multi-hot matrix (see the module docstring).

    Args:
        seen: [U, V] bool, user u's training items (row 0 and column 0: the unknown ids, empty).
            A persistent buffer: a saved model scores its users and folds in histories on its own.
        hidden_sizes: encoder widths (paper: [600]).
        decoder_sizes: the decoder's hidden widths (None: hidden_sizes reversed, the paper's; []: one
            linear layer from z, RecVAE's).
        latent_dim: dimension of z (paper: 200).
        dropout: input dropout rate (paper: 0.5).
        activation: hidden activation of the ``mlp`` encoder and of the decoder (paper: tanh).
        beta_max, total_anneal_steps: the KL annealing schedule (paper: 0.2, 200,000).
        noise_std: scale of ε in z = μ + noise_std · ε σ (paper: 1; RecBole uses 0.01).
        l2: ``l2 ||W||²`` on every weight matrix, added to the loss.
        encoder: ``mlp`` (the paper's) or ``recvae`` (RecVAE's dense/swish/layer-norm encoder, depth
            ``len(hidden_sizes)`` at width ``hidden_sizes[0]``; RecVAE: [600] x 5).
        beta_per_item: > 0: per-user KL weight beta_per_item · |x_u| (RecVAE) instead of annealing.
        prior: ``standard`` N(0, I) (the paper's, KL in closed form) or ``composite`` (RecVAE's).
        encoder_steps, decoder_steps: > 0: alternate encoder-only and decoder-only updates in cycles
            of that many training batches (RecVAE); 0: every batch updates everything.
        catalogue, ks, exclude, per_user_metrics: the retrieval metrics (see CatalogueScored).

    Data:
        ``fit(model.training_data(), ...)`` trains on ``{"row": [B] user ids}`` (the users with at
        least one training item); validation/evaluation batches are interaction rows ``{"user",
        "item", "query_key"}``, scored by the factorised form.
    """

    def __init__(self, seen: torch.Tensor, hidden_sizes: Sequence[int] = (600,), latent_dim: int = 200,
                 dropout: float = 0.5, activation: str = "tanh", beta_max: float = 0.2,
                 total_anneal_steps: int = 200_000, noise_std: float = 1.0, l2: float = 0.0,
                 encoder: EncoderKind = "mlp", decoder_sizes: Sequence[int] | None = None,
                 beta_per_item: float = 0.0, prior: PriorKind = "standard",
                 encoder_steps: int = 0, decoder_steps: int = 1, catalogue: torch.Tensor | None = None,
                 ks: Sequence[int] = (1, 5, 10, 50, 100), exclude: Exclusions | None = None,
                 per_user_metrics: bool = False):
        seen = torch.as_tensor(seen)
        if seen.dim() != 2 or seen.dtype != torch.bool:
            raise DataError(f"seen must be a [num_users, num_items] bool matrix; got {tuple(seen.shape)} {seen.dtype}")
        num_users, num_items = seen.shape
        super().__init__(num_items, catalogue, ks, exclude, per_user_metrics)
        sizes = [int(h) for h in hidden_sizes]
        if not sizes or min(sizes) < 1 or latent_dim < 1:
            raise ConfigError(f"hidden_sizes must be one or more positive widths and latent_dim >= 1; got "
                              f"{tuple(hidden_sizes)}, {latent_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {dropout}")
        if beta_max < 0 or total_anneal_steps < 0 or noise_std < 0 or beta_per_item < 0:
            raise ConfigError("beta_max, total_anneal_steps, noise_std and beta_per_item must be >= 0; got "
                              f"{beta_max}, {total_anneal_steps}, {noise_std}, {beta_per_item}")
        if encoder not in ("mlp", "recvae"):
            raise ConfigError(f"encoder must be 'mlp' or 'recvae'; got {encoder!r}")
        if prior not in ("standard", "composite"):
            raise ConfigError(f"prior must be 'standard' or 'composite'; got {prior!r}")
        if encoder_steps < 0 or decoder_steps < 1:
            raise ConfigError(f"encoder_steps must be >= 0 and decoder_steps >= 1; got {encoder_steps}, "
                              f"{decoder_steps}")
        self.prior = prior
        self.encoder_steps, self.decoder_steps = int(encoder_steps), int(decoder_steps)
        self.num_users = int(num_users)
        self.latent_dim = int(latent_dim)
        self.dropout = float(dropout)
        self.beta_max, self.total_anneal_steps = float(beta_max), int(total_anneal_steps)
        self.noise_std, self.beta_per_item = float(noise_std), float(beta_per_item)
        self.register_buffer("seen", seen.clone())                               # [U, V] bool
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))   # training batches so far

        if encoder == "recvae":
            self.encoder: nn.Module = RecVAEEncoder(num_items, sizes[0], len(sizes), latent_dim, l2)
        else:
            layers: list[nn.Module] = []
            width = num_items
            for size in sizes:
                layers.append(Dense(width, size, activation=activation, l2=l2))
                width = size
            layers.append(Dense(width, 2 * latent_dim, l2=l2))
            self.encoder = nn.Sequential(*layers)
        if prior == "composite":
            # The frozen encoder of the prior: weights, not trained (no gradient, skipped by make_optimizer).
            self.prior_encoder: nn.Module | None = copy.deepcopy(self.encoder).requires_grad_(False)
        else:
            self.prior_encoder = None
        widths = [latent_dim, *(reversed(sizes) if decoder_sizes is None else [int(d) for d in decoder_sizes])]
        if min(widths) < 1:
            raise ConfigError(f"decoder_sizes must be positive widths; got {list(decoder_sizes or [])}")
        self.decoder_hidden = nn.Sequential(*[Dense(a, b, activation=activation, l2=l2)
                                              for a, b in zip(widths, widths[1:])])
        self.decoder_out = Dense(widths[-1], num_items, l2=l2)

    # Data ----------------------------------------------------------------------------------
    def training_data(self, interactions: Columns | None = None) -> Columns:
        """``{"row": user ids with at least one training item}``: what ``fit`` trains on (``recstack
        train`` passes its interaction rows; the model already holds them as ``seen``)."""
        users = torch.nonzero(self.seen.any(dim=1)).reshape(-1)
        if users.numel() == 0:
            raise DataError("Mult-VAE has no user with a training item to train on.")
        return Columns({"row": users.cpu()})

    # Network -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, V] multi-hot (any real weights) -> (μ, log σ²), each [B, latent_dim]; input dropout in
        training mode only."""
        h = F.normalize(x.float(), dim=1)    # x / ||x||₂ (an all-zero row stays zero)
        h = F.dropout(h, self.dropout, training=self.training)
        out = self.encoder(h)
        return out[:, :self.latent_dim], out[:, self.latent_dim:]

    def negative_elbo(self, x: torch.Tensor, beta: float | torch.Tensor, noise: torch.Tensor | None = None,
                      dropout: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, mean NLL, mean KL) of a batch x [B, V] (see the module docstring).

        ``beta``: a scalar or [B] per-row KL weights. ``noise``: ε [B, latent_dim] (default: drawn
        in training mode, zero in eval mode). ``dropout`` False: no input dropout (decoder phase).
        """
        x = x.float()
        if dropout:
            mu, logvar = self.encode(x)
        else:
            out = self.encoder(F.normalize(x, dim=1))
            mu, logvar = out[:, :self.latent_dim], out[:, self.latent_dim:]
        if noise is None:
            noise = torch.randn_like(mu) if self.training else torch.zeros_like(mu)
        z = mu + self.noise_std * noise * torch.exp(0.5 * logvar)
        logits = self.decoder_out(self.decoder_hidden(z))
        nll = -(F.log_softmax(logits, dim=1) * x).sum(dim=1)                       # [B]
        if self.prior_encoder is None:
            kl = 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=1)       # [B], closed form
        else:
            kl = (log_normal(z, mu, logvar) - self.log_prior(x, z)).sum(dim=1)   # [B], one-sample estimate
        return (nll + beta * kl).mean(), nll.mean(), kl.mean()

    def log_prior(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """[B, latent_dim] log p(z_k | x) of the composite prior (module docstring)."""
        assert self.prior_encoder is not None
        with torch.no_grad():
            old = self.prior_encoder(F.normalize(x.float(), dim=1))
        old_mu, old_logvar = old[:, :self.latent_dim], old[:, self.latent_dim:]
        parts = torch.stack([log_normal(z, 0.0, 0.0), log_normal(z, old_mu, old_logvar),
                             log_normal(z, 0.0, WIDE_LOGVAR)], dim=-1)
        return torch.logsumexp(parts + torch.log(torch.tensor(COMPOSITE_WEIGHTS, dtype=z.dtype, device=z.device)),
                               dim=-1)

    def phase(self, step: int) -> str:
        """"joint", "encoder" or "decoder": what training batch ``step`` (0-based) updates."""
        if self.encoder_steps == 0:
            return "joint"
        return "encoder" if step % (self.encoder_steps + self.decoder_steps) < self.encoder_steps else "decoder"

    def _start_step(self, step: int) -> str:
        """Set which parameters get gradients for training batch ``step`` and refresh the prior's
        encoder at the start of each cycle; returns the phase."""
        cycle = self.encoder_steps + self.decoder_steps if self.encoder_steps else 1
        if self.prior_encoder is not None and step % cycle == 0:
            self.prior_encoder.load_state_dict(self.encoder.state_dict())
        phase = self.phase(step)
        self.encoder.requires_grad_(phase != "decoder")
        for module in (self.decoder_hidden, self.decoder_out):
            module.requires_grad_(phase != "encoder")
        return phase

    def beta(self, x: torch.Tensor) -> float | torch.Tensor:
        """The KL weight of the next training batch: beta_per_item · |x_u| ([B]) or the annealed β."""
        if self.beta_per_item > 0:
            return self.beta_per_item * x.float().sum(dim=1)
        if self.total_anneal_steps == 0:
            return self.beta_max
        return min(self.beta_max, float(self.anneal_step) / self.total_anneal_steps)

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        if "row" in batch:
            x = self.seen.index_select(0, batch["row"].long().to(self.seen.device))
            if not training:
                return self.negative_elbo(x, self.beta(x))[0]
            phase = self._start_step(int(self.anneal_step))
            loss, _, _ = self.negative_elbo(x, self.beta(x), dropout=phase != "decoder")
            self.anneal_step += 1
            return loss
        if {"user", "item"} <= batch.keys():
            return self.score_interactions(batch)
        raise ConfigError(f"MultVAE batches need a 'row' column (training user rows: fit(model.training_data())) "
                          f"or 'user' and 'item' columns (interaction rows to evaluate); got {sorted(batch)}.")

    # Factorised form -----------------------------------------------------------------------
    def fold_in(self, x: torch.Tensor) -> torch.Tensor:
        """[B, V] multi-hot histories -> [B, H + 1] queries ``[g(μ(x)), 1]`` (eval mode: no dropout,
        z = μ), whose dot product with :meth:`item_embeddings` is the decoder's logit."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return decoded_query(self.encoder, self.decoder_hidden, self.latent_dim, x.to(self.seen.device))
        finally:
            self.train(was_training)

    def fold_in_histories(self, histories: IdLists) -> torch.Tensor:
        """:meth:`fold_in` of IdLists rows (item ids; unknown id 0 dropped)."""
        rows, ids = histories.pairs()
        x = multi_hot(torch.from_numpy(rows), torch.from_numpy(ids), histories.num_rows, self.num_items)
        return self.fold_in(x)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user ids -> [B, H + 1]: :meth:`fold_in` of each user's training row (ids outside
        [0, num_users) read an empty row)."""
        users = users.long().to(self.seen.device)
        known = (users >= 0) & (users < self.num_users)
        x = self.seen[users.clamp(0, self.num_users - 1)] & known[:, None]
        return self.fold_in(x)

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """[B] item ids -> [B, H + 1]: the output layer's weights and bias ``[D_o[j], c_o[j]]``."""
        items = items.long().to(self.decoder_out.weight.device)
        return torch.cat([self.decoder_out.weight[items], self.decoder_out.bias[items, None]], dim=1)
