"""The ``recstack`` command line and the config-driven experiment code behind it.

``recstack.cli.main.main(argv) -> exit code`` is the entry point (console script
``recstack``, or ``python -m recstack``). The pieces, usable from Python too:

* :mod:`~recstack.cli.config`: typed experiment configs (YAML/TOML/JSON) and their validation;
* :mod:`~recstack.cli.interactions`: reading, validating, splitting and encoding any interaction data;
* :mod:`~recstack.cli.model_kinds`: the ``model.kind`` registry (``register_model_kind``);
* :mod:`~recstack.cli.feature_towers`: feature-aware towers and the generic two-tower model;
* :mod:`~recstack.cli.experiment`: train / resume / evaluate / recommend;
* :mod:`~recstack.cli.run_dir`: the run-folder layout, checkpoints, plots;
* :mod:`~recstack.cli.reproductions`: ``recstack reproduce NAME`` registry;
* :mod:`~recstack.cli.demo`: ``make demo``.
"""

from .main import main

__all__ = ["main"]
