"""The ``ensemble`` model kind: a weighted blend of other configs' models
(:class:`~recstack.models.ensemble.ScoreEnsemble`).

A member is named by a config (a shipped config's name or a file path) and contributes its
``seed``, ``model``, ``optimizer`` and ``training`` sections; it is trained on the ensemble's own
data and split, exactly as that config trains (its optimizer, its epochs; a gradient-trained
member without per-epoch validation, since the ensemble's ``fit`` sees the training rows only).
Each member's tuned settings therefore stay written once, in the member's config::

    model:
      kind: ensemble
      members:
        ease: {config: ease, weight: 1.0}
        ials: {config: ials, weight: 0.5, set: ["training.epochs=8"]}

``set`` takes ``--set``-style overrides of the member's config. ``recstack tune`` searches a
member's weight as ``model.members.<name>.weight``. score(u, j) = Σ_m w_m s_m(u, j) / σ_m, with σ_m
the spread of member m's scores (see :mod:`recstack.models.ensemble`).

Within one process, a member trained on the same rows with the same settings is trained once:
its fitted state is kept (:data:`MEMBER_CACHE`, the last :data:`CACHE_SIZE` fits) and reloaded,
so a tuning study over the weights fits each member once instead of once per trial. A member is
built and trained from its own ``seed`` exactly as a run of its config would be, so the reloaded
state is the state a new fit would give (and a run of the member's config alone gives).

Registered lazily from :data:`~recstack.experiment.model_kinds.MODEL_KINDS`.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..core.columns import Columns
from ..core.errors import ConfigError, RecstackError
from ..core.id_lists import IdLists
from ..training.model import Model
from ..training.progress import EpochsProgress
from .config import ExperimentConfig, dump_config, parse_config
from .config_files import read_raw_config, resolve_paths
from .limits import MemoryEstimate
from .model_kinds import MODEL_KINDS, ModelContext, _baseline_kwargs, register_model_kind
from .reporter import Reporter

#: How many fitted member states a process keeps for reuse (see the module docstring).
CACHE_SIZE = 8
#: (member settings, data fingerprint) -> the fitted member's state_dict (CPU tensors).
MEMBER_CACHE: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()


@dataclass
class EnsembleMember:
    """One member: ``config`` (a shipped config's name or a path), ``weight`` (>= 0) and ``set``
    (``--set``-style overrides of that config, e.g. ``["seed=1"]``)."""

    config: str = ""
    weight: float = 1.0
    set: list[str] = field(default_factory=list)


@dataclass
class EnsembleParams:
    """``members``: name -> :class:`EnsembleMember` (at least one, weights not all 0);
    ``scale_users``: how many training users each member's score spread σ_m is measured over."""

    members: dict[str, EnsembleMember] = field(default_factory=dict)
    scale_users: int = 1024


def member_config(name: str, member: EnsembleMember) -> ExperimentConfig:
    """The validated config of ensemble member ``name`` (ConfigError if unreadable, invalid or an
    ensemble itself)."""
    where = f"model.members.{name}"
    if not member.config:
        raise ConfigError(f"{where}.config: name the member's config (a shipped config such as 'ease', or a path)")
    try:
        raw, source, base = read_raw_config(member.config, member.set)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    model = raw.get("model")
    kind = model.get("kind") if isinstance(model, dict) else None
    if kind == "ensemble":
        raise ConfigError(f"{where}: {member.config!r} is itself an ensemble; list its members here instead")
    config = resolve_paths(parse_config(raw, source=f"{where} ({source})"), base)
    spec = MODEL_KINDS.get(config.model.kind)
    if spec.sequential:
        raise ConfigError(f"{where}: {config.model.kind!r} ranks from histories only (a next-item kind); an "
                          "ensemble blends user-scoring kinds (ease, ials, multvae, lightgcn, two_tower, ...)")
    return config


def check_ensemble(p: EnsembleParams) -> list[str]:
    problems = []
    if not p.members:
        problems.append("model.members: list the members, e.g. {ease: {config: ease, weight: 1.0}, "
                        "ials: {config: ials, weight: 0.5}}")
    for name, member in p.members.items():
        if not member.weight >= 0 or member.weight == float("inf"):
            problems.append(f"model.members.{name}.weight: must be finite and >= 0, got {member.weight}")
        try:
            member_config(name, member)
        except (ConfigError, RecstackError) as exc:
            problems.append(str(exc))
    if p.members and all(m.weight == 0 for m in p.members.values()):
        problems.append("model.members: every weight is 0; give at least one member a positive weight")
    if p.scale_users < 1:
        problems.append(f"model.scale_users: must be >= 1, got {p.scale_users}")
    return problems


def ensemble_memory(ctx: ModelContext, p: EnsembleParams) -> MemoryEstimate:
    """The members' estimates, summed (they are all held at once)."""
    total, parts = 0, []
    for name, member in p.members.items():
        config = member_config(name, member)
        kind = MODEL_KINDS.get(config.model.kind)
        if kind.memory is not None:
            estimate = kind.memory(ctx, config.model.params)
            total += estimate.bytes
            parts.append(f"{name}: {estimate.what}")
    return MemoryEstimate(total, "; ".join(parts) or "the members")


def _fingerprint(ctx: ModelContext, train: Columns) -> str:
    """SHA-256 of what a member's fit depends on besides its own settings: the vocabularies, the
    catalogue, the feature tables and the training columns."""
    digest = hashlib.sha256(f"{ctx.num_users}/{ctx.num_items}".encode())
    tensors = [ctx.catalogue] + [train[k] for k in sorted(train.keys())]
    for side in sorted(ctx.feature_tables or {}):
        tensors += [ctx.feature_tables[side][k] for k in sorted(ctx.feature_tables[side])]  # type: ignore[index]
    for tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _trainer(name: str, position: str, config: ExperimentConfig, ctx: ModelContext,  # type: ignore[no-untyped-def]
             rng_state: torch.Tensor):
    """``trainer(member, train, reporter)`` for member ``name`` (``position``: "2/5"), built from
    ``config`` (see the module docstring).

    ``rng_state``: torch's random state right after the member was built; training starts from it,
    so the member trains as a run of its own config would (which builds and then trains).
    ``reporter``: the run's :class:`~.reporter.Reporter` (None: quiet). Each member's start and
    seconds are ``info`` lines (a member reused from the cache trains nothing and says nothing).
    In bar mode a gradient-trained member also shows one bar over its epochs on stderr (no
    per-epoch lines), since a blend of neural members trains for minutes; the jsonl stream keeps
    the run's own epoch events only."""
    kind = MODEL_KINDS.get(config.model.kind)
    settings = dump_config(config)

    def train(member: Model, rows: Columns, reporter: Reporter | None = None) -> None:
        from .run import fit_without_run   # the member trains exactly as its own config does

        reporter = reporter or Reporter("quiet")
        key = hashlib.sha256(settings.encode()).hexdigest() + _fingerprint(ctx, rows)
        if key in MEMBER_CACHE:
            member.load_state_dict(MEMBER_CACHE[key])
            MEMBER_CACHE.move_to_end(key)
            return
        reporter.info(f"ensemble member {position} {name}: training {config.name or config.model.kind}",
                      member=name, config=config.name)
        start = time.perf_counter()
        torch.set_rng_state(rng_state)   # the same fit whatever the members' order
        if kind.gradient_trained:
            bar = EpochsProgress(f"ensemble member {position} {name}", err=reporter.err) if reporter.mode == "bar" else None
            fit_without_run(config, member, rows, Reporter("quiet"), progress=bar)
        else:
            member.fit(rows)
        seconds = time.perf_counter() - start
        reporter.info(f"ensemble member {position} {name}: {seconds:.1f} s", member=name, seconds=seconds)
        MEMBER_CACHE[key] = {k: v.detach().cpu().clone() for k, v in member.state_dict().items()}
        while len(MEMBER_CACHE) > CACHE_SIZE:
            MEMBER_CACHE.popitem(last=False)

    return train


def build_ensemble(ctx: ModelContext, p: EnsembleParams) -> Model:
    from ..models.ensemble import ScoreEnsemble
    from .building import build_model

    names, members, trainers, kinds = [], [], [], []
    for number, (name, member) in enumerate(p.members.items(), start=1):
        config = member_config(name, member)
        names.append(name)
        members.append(build_model(config, ctx))   # seeds torch with the member's seed
        trainers.append(_trainer(name, f"{number}/{len(p.members)}", config, ctx, torch.get_rng_state()))
        kinds.append(MODEL_KINDS.get(config.model.kind))
    model = ScoreEnsemble(members, [m.weight for m in p.members.values()], ctx.num_items, trainers=trainers,
                          names=names, scale_users=p.scale_users, **_baseline_kwargs(ctx))
    # Fold-in (recommend --history, the next-item protocols) needs every member to read histories.
    model.member_kinds = kinds
    model.reads_histories = all(k.history_query is not None and getattr(m, "reads_histories", True)
                                for k, m in zip(kinds, members))
    return model


def ensemble_history_query(model: Model, histories: IdLists) -> torch.Tensor:
    """[B, Σ d_m] the blend's query of each history: every member's own history query, scaled by
    w_m / σ_m (only when every member folds in histories: ``model.reads_histories``)."""
    queries = [kind.history_query(member, histories)
               for kind, member in zip(model.member_kinds, model.members)]  # type: ignore[attr-defined]
    return model.combine_queries(queries)  # type: ignore[operator]


register_model_kind("ensemble", build_ensemble, EnsembleParams,
                    "weighted blend of other configs' models (scores scaled to one spread)",
                    gradient_trained=False, check=check_ensemble, memory=ensemble_memory,
                    history_query=ensemble_history_query, fit_reports_progress=True)

__all__ = ["CACHE_SIZE", "MEMBER_CACHE", "EnsembleMember", "EnsembleParams", "build_ensemble", "check_ensemble",
           "ensemble_history_query", "member_config"]
