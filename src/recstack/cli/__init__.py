"""The ``recstack`` command line: argument parsing, commands and output formatting only.

``recstack.cli.main.main(argv) -> exit code`` is the entry point (console script
``recstack``, or ``python -m recstack``); :mod:`~recstack.cli.commands` holds the
subcommands, :mod:`~recstack.cli.output` the text tables and :mod:`~recstack.cli.demo`
``make demo``. The experiment code behind them is :mod:`recstack.experiment`:

* :mod:`~recstack.experiment.config`: the config schema (typed dataclasses) and its validation
  (:mod:`~recstack.experiment.checks`: ranges and settings that need each other);
* :mod:`~recstack.experiment.config_files`: reading config files, ``--set``, the shipped configs;
* :mod:`~recstack.experiment.tables`, :mod:`~recstack.experiment.interactions`,
  :mod:`~recstack.experiment.preprocessing`: reading, validating, splitting and encoding data;
* :mod:`~recstack.experiment.model_kinds`: the ``model.kind`` registry (``register_model_kind``);
  :mod:`~recstack.experiment.sequential_kinds`: ``sasrec``, ``gru4rec``, ``transitions``;
* :mod:`~recstack.experiment.next_item`: the next-item protocols of a leave-one-out split, for
  every kind, and the validation that selects a model;
* :mod:`~recstack.experiment.run`: train / resume; :mod:`~recstack.experiment.saved_run`:
  evaluate / recommend / similar from a run folder (:mod:`~recstack.experiment.run_dir`);
* :mod:`~recstack.experiment.reference`: a run's result beside its config's published figures.
"""

from .main import main

__all__ = ["main"]
