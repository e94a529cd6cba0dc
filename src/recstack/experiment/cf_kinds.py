"""Collaborative-filtering model kinds over the user x item interaction graph: ``multvae``
(:class:`~recstack.models.multvae.MultVAE`, optionally with RecVAE's encoder) and ``lightgcn``
(:class:`~recstack.models.lightgcn.LightGCN`).

Both score a user by a dot product with item vectors (the builder contract of
:mod:`recstack.experiment.model_kinds`), so ``recommend``, ``similar``, indexes and bundles use
them unchanged. They keep what they need to score in persistent buffers of shapes fixed by the
vocabularies: Mult-VAE the users' training rows (it encodes them), LightGCN the propagated user
and item embeddings (it propagates once after each change of its weights). ``multvae`` folds in
histories (``history_query``: the multi-hot row of the history through the encoder), so the
next-item protocols and ``recommend --history`` read the history given; LightGCN's users are
nodes of the training graph and it scores them by id.

Registered lazily from :data:`~recstack.experiment.model_kinds.MODEL_KINDS` (this module is
imported the first time one of its names is looked up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..core.errors import ConfigError
from ..core.id_lists import IdLists
from ..training.model import Model
from .limits import MAX_WIDTH, WIDTH_WHY, MemoryEstimate, bound, width_problems
from .model_kinds import ModelContext, _activation_problem, register_model_kind

#: LightGCN propagation layers a config may ask for (the paper uses 1-4).
MAX_LAYERS = 64


@dataclass
class MultVAEParams:
    """Mult-VAE (Liang et al. 2018; the paper's settings by default): encoder ``hidden_sizes`` ->
    ``latent_dim`` (mean and log-variance), decoder mirrored, ``activation`` between layers, input
    ``dropout`` on the L2-normalised multi-hot row, KL weight annealed linearly to ``beta_max`` over
    ``total_anneal_steps`` batches, ``noise_std`` scaling the reparameterisation noise, ``l2`` on the
    weight matrices. ``encoder: recvae`` uses RecVAE's dense swish/layer-norm encoder; ``decoder_sizes``
    the decoder's hidden widths (null: hidden_sizes reversed; []: one linear layer, RecVAE's);
    ``beta_per_item`` > 0 weights each user's KL by beta_per_item x the user's row size (RecVAE);
    ``prior: composite`` is RecVAE's composite prior; ``encoder_steps`` > 0 alternates RecVAE-style
    encoder-only and decoder-only updates in cycles of encoder_steps + decoder_steps batches."""

    hidden_sizes: list[int] = field(default_factory=lambda: [600])
    latent_dim: int = 200
    dropout: float = 0.5
    activation: str = "tanh"
    beta_max: float = 0.2
    total_anneal_steps: int = 200_000
    noise_std: float = 1.0
    l2: float = 0.0
    encoder: Literal["mlp", "recvae"] = "mlp"
    decoder_sizes: list[int] | None = None
    beta_per_item: float = 0.0
    prior: Literal["standard", "composite"] = "standard"
    encoder_steps: int = 0
    decoder_steps: int = 1


def check_multvae(p: MultVAEParams) -> list[str]:
    problems = [bound("model.latent_dim", p.latent_dim, 1, MAX_WIDTH, WIDTH_WHY),
                _activation_problem("model.activation", p.activation)]
    if not p.hidden_sizes:
        problems.append("model.hidden_sizes: list at least one encoder width, e.g. [600]")
    if not 0 <= p.dropout < 1:
        problems.append(f"model.dropout: must be in [0, 1), got {p.dropout}")
    if p.decoder_steps < 1:
        problems.append(f"model.decoder_steps: must be >= 1, got {p.decoder_steps}")
    for key in ("beta_max", "total_anneal_steps", "noise_std", "l2", "beta_per_item", "encoder_steps"):
        if getattr(p, key) < 0:
            problems.append(f"model.{key}: must be >= 0, got {getattr(p, key)}")
    return [x for x in problems if x] + width_problems("model.hidden_sizes", p.hidden_sizes) + \
        width_problems("model.decoder_sizes", p.decoder_sizes or [])


def multvae_memory(ctx: ModelContext, p: MultVAEParams) -> MemoryEstimate:
    """The bool user x item matrix, and float32 weights (about 2 x items x hidden plus the inner
    layers) with gradients and two Adam states."""
    u, i = ctx.num_users, ctx.num_items
    h = p.hidden_sizes
    d = list(reversed(h)) if p.decoder_sizes is None else p.decoder_sizes
    inner = [*h, 2 * p.latent_dim, p.latent_dim, *d]
    params = i * h[0] + (d[-1] if d else p.latent_dim) * i + sum(a * b for a, b in zip(inner, inner[1:])) + \
        (len(h) * h[0] * h[0] if p.encoder == "recvae" else 0)
    return MemoryEstimate(u * i + 16 * params,
                          f"a {u:,} x {i:,} bool user-item matrix and {params:,} float32 weights with gradients and "
                          "optimizer state")


def build_multvae(ctx: ModelContext, p: MultVAEParams) -> Model:
    from ..models.multvae import MultVAE, multi_hot

    if ctx.train is not None:
        seen = multi_hot(ctx.train["user"], ctx.train["item"], ctx.num_users, ctx.num_items)
    else:  # rebuilding a saved run: load_state_dict brings the rows
        seen = torch.zeros(ctx.num_users, ctx.num_items, dtype=torch.bool)
    try:
        return MultVAE(seen, hidden_sizes=p.hidden_sizes, latent_dim=p.latent_dim, dropout=p.dropout,
                       activation=p.activation, beta_max=p.beta_max, total_anneal_steps=p.total_anneal_steps,
                       noise_std=p.noise_std, l2=p.l2, encoder=p.encoder, decoder_sizes=p.decoder_sizes, beta_per_item=p.beta_per_item,
                       prior=p.prior, encoder_steps=p.encoder_steps, decoder_steps=p.decoder_steps,
                       catalogue=ctx.catalogue, ks=ctx.ks, exclude=ctx.exclude,
                       per_user_metrics=ctx.validation_protocol == "exclude-seen")
    except ValueError as exc:  # an unknown activation name
        raise ConfigError(f"model: {exc}") from None


def multvae_history_query(model: Model, histories: IdLists) -> torch.Tensor:
    """[B, H + 1] Mult-VAE queries of the histories' multi-hot rows (the encoder's mean, decoded)."""
    return model.fold_in_histories(histories)  # type: ignore[operator]


@dataclass
class LightGCNParams:
    """LightGCN (He et al. 2020): ``embedding_dim`` ego embeddings ~ N(0, ``init_std``) propagated over
    ``num_layers`` of the normalised user-item graph (the final embedding is the mean of the layers),
    trained with BPR on one sampled negative per interaction and ``l2`` on the batch's ego embeddings."""

    embedding_dim: int = 64
    num_layers: int = 2
    l2: float = 1e-4
    init_std: float = 0.1


def check_lightgcn(p: LightGCNParams) -> list[str]:
    problems = [bound("model.embedding_dim", p.embedding_dim, 1, MAX_WIDTH, WIDTH_WHY),
                bound("model.num_layers", p.num_layers, 0, MAX_LAYERS,
                      "each layer is one sparse product with the whole graph; the paper uses 1-4")]
    if p.l2 < 0:
        problems.append(f"model.l2: must be >= 0, got {p.l2}")
    if p.init_std <= 0:
        problems.append(f"model.init_std: must be > 0, got {p.init_std}")
    return [x for x in problems if x]


def lightgcn_memory(ctx: ModelContext, p: LightGCNParams) -> MemoryEstimate:
    """Float32 ego embeddings (with gradients and two Adam states), the propagated copies, one
    [U + V, d] activation per layer, and the graph (two int64 indices and a float32 value per edge,
    both directions) with the int64 pair keys."""
    nodes = ctx.num_users + ctx.num_items
    edges = ctx.train["item"].numel() if ctx.train is not None else 0
    return MemoryEstimate(4 * nodes * p.embedding_dim * (4 + 2 + p.num_layers + 2) + 2 * 20 * edges + 8 * edges,
                          f"{nodes:,} x {p.embedding_dim} float32 embeddings (weights, optimizer state, propagated "
                          f"layers) and a graph of {2 * edges:,} edges")


def build_lightgcn(ctx: ModelContext, p: LightGCNParams) -> Model:
    from ..models.lightgcn import LightGCN

    users = items = None
    if ctx.train is not None:
        known = (ctx.train["user"] > 0) & (ctx.train["item"] > 0)   # unknown ids (0) are not graph nodes' edges
        users, items = ctx.train["user"][known], ctx.train["item"][known]
    return LightGCN(ctx.num_users, ctx.num_items, users, items, embedding_dim=p.embedding_dim,
                    num_layers=p.num_layers, l2=p.l2, init_std=p.init_std, catalogue=ctx.catalogue, ks=ctx.ks,
                    exclude=ctx.exclude, per_user_metrics=ctx.validation_protocol == "exclude-seen")


register_model_kind("multvae", build_multvae, MultVAEParams,
                    "Mult-VAE variational autoencoder over users' item rows (multinomial likelihood; RecVAE encoder "
                    "optional)", check=check_multvae, memory=multvae_memory, history_query=multvae_history_query)

register_model_kind("lightgcn", build_lightgcn, LightGCNParams,
                    "LightGCN: id embeddings propagated over the normalised user-item graph, BPR loss",
                    check=check_lightgcn, memory=lightgcn_memory)

__all__ = ["LightGCNParams", "MultVAEParams", "build_lightgcn", "build_multvae", "multvae_history_query"]
