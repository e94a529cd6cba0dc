"""The experiment schema: the typed sections of a config (see :mod:`recstack.experiment.config`
for the file format and parsing, :mod:`recstack.experiment.checks` for the range checks)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

#: Evaluation protocols. "all-items" ranks each test row's item among the whole catalogue
#: (the TFRS tutorials' top-k accuracy); "exclude-seen" removes each user's earlier items;
#: "next-item" ranks each user's held-out next item among the whole catalogue given the user's
#: history (HR@K, NDCG@K, MRR; split.method: leave-one-out); "next-item-sampled" ranks it among
#: sampled negatives only (a secondary protocol, for comparison with papers that report it).
PROTOCOLS = ("all-items", "exclude-seen", "next-item", "next-item-sampled")
#: The protocols of a leave-one-out split: one held-out item per user, ranked given the history.
NEXT_ITEM_PROTOCOLS = ("next-item", "next-item-sampled")
#: The part of a reference metric key that is not a protocol: test loss and RMSE (rating models).
TEST_METRICS = "test"

#: Interaction sources that need no file: the name loads a built-in dataset.
BUILTIN_DATASETS = ("movielens-100k", "movielens-1m", "movielens-20m")

#: The evaluation protocols (see :data:`recstack.experiment.checks.PROTOCOLS`).
Protocol = Literal["all-items", "exclude-seen", "next-item", "next-item-sampled"]


# -- sections ------------------------------------------------------------------------------------
@dataclass
class ColumnsConfig:
    """Which columns of the interactions table hold what (only user and item are required)."""

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = None
    timestamp: str | None = None
    weight: str | None = None
    #: The part each row belongs to ("train", "validation" or "test"), for ``split.method: column``.
    split: str | None = None


@dataclass
class FeatureTableConfig:
    """An item or user feature table: one row per id, feature columns by type."""

    path: str
    id: str
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    text: str | None = None


@dataclass
class DataConfig:
    """Interactions (CSV/Parquet file or built-in dataset) and optional feature tables.

    ``duplicates`` says what to do with repeated (user, item) pairs: keep the last
    or first row of each pair (file order), keep all rows, or stop with an error.

    Filters, applied after the duplicates in this order (RecBole 1.2.1's: by value, then by
    interaction counts) and before the vocabulary and the split; the run's data.json records
    what each one dropped:

    * ``min_rating``: keep the interactions with rating >= this (needs ``columns.rating``;
      RecBole's ``val_interval: {rating: "[3,inf)"}`` is ``min_rating: 3``).
    * ``k_core``: repeatedly drop the users and the items with fewer than this many
      interactions until every remaining user and item has at least that many (RecBole's
      ``user_inter_num_interval`` / ``item_inter_num_interval: "[k,inf)"``;
      :func:`recstack.datasets.k_core`).
    """

    interactions: str
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    items: FeatureTableConfig | None = None
    users: FeatureTableConfig | None = None
    duplicates: Literal["keep-last", "keep-first", "keep-all", "error"] = "keep-last"
    csv_separator: str = ","
    min_rating: float | None = None
    k_core: int | None = None


@dataclass
class SplitConfig:
    """Train/test split (recstack.datasets.splits) and an optional validation split of train.

    ``validation_fraction`` > 0 carves a validation set out of the training part with the
    same method (for leave-last-out: each user's last remaining interaction).

    ``leave-one-out`` (the next-item protocol of SASRec, BERT4Rec, RecBole and Meta's
    generative-recommenders): per user with at least 3 interactions, the last one (by
    timestamp; equal timestamps keep file order) is the test item, the second to last the
    validation item, the rest is training; users with fewer interactions are training only.

    ``per-user-random`` (RecBole's general-recommendation protocol): each user's interactions are
    shuffled with ``seed`` and cut by ``ratios`` (``[train, validation, test]``, default 8:1:1, or
    ``[train, test]``) with RecBole 1.2.1's rounding: every held-out part gets ``floor(ratio * n)``
    rows, a part rounded down to none takes one from training while training keeps more than one
    (so a user with 2 rows has 1 train and 1 test row). ``train_fraction`` and
    ``validation_fraction`` do not apply to it.

    ``column``: a split made elsewhere, read from the interactions table: the column mapped by
    ``data.columns.split`` says of every row "train", "validation" or "test" (another toolkit's
    split, a benchmark's official one). ``seed``, ``ratios`` and the fractions do not apply.
    """

    method: Literal["random", "temporal", "leave-last-out", "leave-one-out", "per-user-random", "column"] = "random"
    train_fraction: float = 0.8
    validation_fraction: float = 0.0
    leave_out: int = 1
    seed: int = 42
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])


@dataclass
class FeaturesConfig:
    """Preprocessing settings. ``vocabulary``: fit the user/item vocabularies on the training
    rows only ("train", no leakage; test-only users and items are cold start) or on all rows
    ("all", as the TFRS tutorials do)."""

    vocabulary: Literal["train", "all"] = "train"
    text_max_tokens: int = 10_000
    text_max_length: int = 32


@dataclass
class RetrievalTaskConfig:
    """In-batch softmax retrieval loss (recstack.tasks.Retrieval); weight 0 disables its loss.

    ``sampled_negatives`` adds that many items per batch, drawn with replacement with probability
    proportional to count(item)^``sampled_negatives_alpha`` (1: popularity, 0: uniform), as
    extra negatives for every query: mixed negative sampling (Yang et al. 2020).
    ``logq_correction`` subtracts log Q(item) from every logit (Yi et al. 2019), which removes
    the popularity bias of the negatives: Q = the item's training frequency, or with sampled
    negatives its expected share of a batch's candidate slots, (B P_train + K P_sampled) / (B + K).
    """

    weight: float = 1.0
    temperature: float | None = None
    remove_accidental_hits: bool = False
    num_hard_negatives: int | None = None
    reduction: Literal["sum", "mean"] = "sum"
    logq_correction: bool = False
    sampled_negatives: int = 0
    sampled_negatives_alpha: float = 1.0


@dataclass
class RatingTaskConfig:
    """Rating regression (MSE, RMSE metric); needs ``data.columns.rating``; weight 0 disables it."""

    weight: float = 0.0


@dataclass
class TasksConfig:
    retrieval: RetrievalTaskConfig = field(default_factory=RetrievalTaskConfig)
    rating: RatingTaskConfig = field(default_factory=RatingTaskConfig)


@dataclass
class OptimizerConfig:
    name: Literal["adagrad", "adam", "adamw", "sgd"] = "adagrad"
    learning_rate: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.0


@dataclass
class EarlyStoppingConfig:
    """Model selection on the validation item (``evaluation.validation_protocol: next-item``):
    ``metric`` (``ndcg_at_K``, ``hr_at_K`` with K in evaluation.ks, or ``mrr``) is computed on the
    validation split every ``training.validation_freq`` epochs; ``patience`` > 0 stops training
    after that many validations without improvement (0: train every epoch); ``restore_best``
    makes the weights of the best validation the run's model (model.pt and the test metrics;
    metrics.json records ``best_epoch``). The test split is never looked at."""

    metric: str = "ndcg_at_10"
    patience: int = 0
    restore_best: bool = True


@dataclass
class TrainingConfig:
    """``shuffle: false`` keeps fixed batches (the TFRS tutorials' cached pipeline);
    a checkpoint is written every ``checkpoint_every`` epochs and after the last one.
    ``precision: bf16`` runs the towers under bfloat16 autocast (for GPUs; the retrieval
    softmax stays in float32). ``threads`` sets torch's intra-op CPU threads for the run
    (0: torch's default, one per core); 1 avoids the slowdown of OpenMP threads waiting on
    each other when other jobs share the cores. ``clip_grad_norm`` > 0 rescales each step's
    gradients to at most that global L2 norm (0: no clipping). A non-finite loss or gradient stops
    the run with an error (status "failed"), never a result. ``early_stopping``: see
    :class:`EarlyStoppingConfig`."""

    epochs: int = 3
    batch_size: int = 4096
    shuffle: bool = True
    validation_freq: int = 1
    train_metrics: bool = False
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    precision: Literal["float32", "bf16"] = "float32"
    threads: int = 0
    clip_grad_norm: float = 0.0
    early_stopping: EarlyStoppingConfig | None = None


@dataclass
class NextItemConfig:
    """Options of the next-item protocols.

    ``exclude_history``: remove the user's earlier items (everything before the held-out item)
    from the ranking; the held-out item itself is always ranked. Both conventions are
    published: SASRec's and generative-recommenders' full-catalogue tables keep them (false,
    the default), RecBole's full ranking of non-sequential models removes them. Say which one
    a figure uses.
    ``sampled_negatives``, ``sampled_distribution``, ``sampled_seed``: the secondary protocol
    ``next-item-sampled`` ranks the held-out item among this many distinct sampled items only
    (SASRec's paper uses 100): uniform over the catalogue or by popularity (interactions
    before the test split), never the held-out item and, with ``exclude_history``, never the
    user's earlier items; seeded, so every model of a comparison meets the same negatives.
    """

    exclude_history: bool = False
    sampled_negatives: int = 100
    sampled_distribution: Literal["uniform", "popularity"] = "uniform"
    sampled_seed: int = 0


@dataclass
class EvaluationConfig:
    """``protocols`` evaluated on the test split after training. "all-items": each test row ranks
    its item among the whole catalogue (the TFRS tutorials' top-k accuracy); "exclude-seen":
    per user, items seen before the test split are removed from the ranking, metrics are
    per-user recall/NDCG. "next-item" (``split.method: leave-one-out``): each user's held-out
    item is ranked among the whole catalogue given the user's history, HR@K, NDCG@K and MRR
    per user, averaged; ties count against the held-out item; "next-item-sampled" ranks it among
    sampled items only (see :class:`NextItemConfig`). Every kind is evaluated the same way:
    sequential kinds read the history, EASE scores the history's items, other kinds score the
    user (their user x item scores). ``validation_protocol`` is used for the per-epoch
    validation (with a next-item protocol: on the validation item only, the history before it).
    Without ``protocols`` / ``validation_protocol`` in the file, a leave-one-out split is
    evaluated with next-item, other splits with all-items and exclude-seen (validated with
    all-items). The old name "seed" of "all-items" is still accepted, with a deprecation warning."""

    protocols: list[Protocol] = field(default_factory=lambda: ["all-items", "exclude-seen"])
    validation_protocol: Protocol = "all-items"
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 50, 100])
    batch_size: int = 4096
    next_item: NextItemConfig = field(default_factory=NextItemConfig)


@dataclass
class OutputConfig:
    """``runs_dir`` (relative to the working directory) receives one folder per run."""

    runs_dir: str = "runs"
    plots: bool = True
    tensorboard: bool = False
    #: report.html at the end of the run (self-contained; its charts need ``plots`` and matplotlib).
    report: bool = True


@dataclass
class TrackingConfig:
    """Experiment tracking. ``mlflow: true`` logs the flattened config as params, every epoch's
    metrics (step = epoch), the test metrics and report.html to MLflow; ``uri`` is any MLflow
    tracking URI (default: the file store ``mlruns/`` in the working directory); ``experiment``
    the MLflow experiment (default: the config's ``name``)."""

    mlflow: bool = False
    uri: str | None = None
    experiment: str | None = None


@dataclass
class ModelConfig:
    """``kind`` names a registered model kind; ``params`` is that kind's hyperparameter dataclass."""

    kind: str = "two_tower"
    params: Any = None


@dataclass
class ReferenceVariant:
    """Published figures for a variation of the config: the settings in ``when`` (dotted keys,
    as ``--set`` takes them, e.g. ``{model.layer_sizes: [32]}``) replace the file's."""

    when: dict[str, Any]
    metrics: dict[str, float]
    label: str = ""


@dataclass
class ReferenceConfig:
    """The published figures a config reproduces, and where they are published.

    ``metrics`` keys are ``PROTOCOL/METRIC`` (``all-items/top_100_categorical_accuracy``,
    ``exclude-seen/recall_at_10``) or ``test/METRIC`` (``test/root_mean_squared_error``), each a
    metric the run reports. ``label`` names the setting they belong to; ``variants`` hold the
    figures published for other settings of the same experiment (see
    :func:`recstack.experiment.reference.applicable_reference`).
    """

    source: str
    metrics: dict[str, float] = field(default_factory=dict)
    label: str = ""
    note: str = ""
    variants: list[ReferenceVariant] = field(default_factory=list)


@dataclass
class TuneConfig:
    """A hyperparameter search (``recstack tune``, :mod:`recstack.experiment.tuning`).

    ``space`` maps dotted settings (the keys ``--set`` takes: ``optimizer.learning_rate``,
    ``model.l2``) to a range ``{low, high}`` (``log: true`` samples log-uniformly, ``int: true``
    integers, ``step`` a grid) or to ``{choices: [...]}``. Every trial trains with one sample
    and is scored by ``metric`` (``ndcg_at_10``, ``recall_at_10``, ``mrr``, ...: a metric of
    ``evaluation.validation_protocol`` with K in ``evaluation.ks``) on the validation split;
    the test split is never evaluated. ``sampler``: ``tpe`` (Optuna's TPE; its first
    ``startup_trials`` trials are random) or ``random``, seeded with ``seed`` (default: the
    config's ``seed``). ``pruner: median`` stops a gradient-trained trial whose validation
    metric after an epoch is worse than the median of earlier trials at that epoch (after
    ``startup_trials`` finished trials and ``warmup_epochs`` epochs); ``none`` never prunes.
    """

    space: dict[str, dict[str, Any]]
    metric: str = "ndcg_at_10"
    direction: Literal["maximize", "minimize"] = "maximize"
    trials: int = 20
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    seed: int | None = None
    startup_trials: int = 5
    warmup_epochs: int = 1


@dataclass
class ExperimentConfig:
    """A whole experiment: data, split, features, model, tasks, optimizer, training, evaluation,
    and the published figures it reproduces (``reference``)."""

    data: DataConfig
    name: str = "experiment"
    description: str = ""
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    split: SplitConfig = field(default_factory=SplitConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    reference: ReferenceConfig | None = None
    tune: TuneConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-ready) with ``model`` flattened to ``{kind, **params}``; without
        ``tune`` when there is no search (a run's config.yaml does not grow a ``tune: null``)."""
        out = dataclasses.asdict(self)
        params = dataclasses.asdict(self.model.params) if dataclasses.is_dataclass(self.model.params) else {}
        out["model"] = {"kind": self.model.kind, **params}
        if out.get("tune") is None:
            out.pop("tune", None)
        return out
