"""The ``recstack`` command line and the config-driven experiment code behind it.

``recstack.cli.main.main(argv) -> exit code`` is the entry point (console script
``recstack``, or ``python -m recstack``). The pieces, usable from Python too:

* :mod:`~recstack.experiment.config`: typed experiment configs (YAML/TOML/JSON) and their validation;
* :mod:`~recstack.experiment.data`: reading, validating, splitting and encoding any interaction data;
* :mod:`~recstack.experiment.model_kinds`: the ``model.kind`` registry (``register_model_kind``);
* :mod:`~recstack.models.feature_tower`: feature-aware towers and the generic two-tower model;
* :mod:`~recstack.experiment.run`: train / resume / evaluate / recommend;
* :mod:`~recstack.experiment.run_dir`: the run-folder layout, checkpoints, plots;
* :mod:`~recstack.cli.reproductions`: ``recstack reproduce NAME`` registry;
* :mod:`~recstack.cli.demo`: ``make demo``.
"""

from .main import main

__all__ = ["main"]
