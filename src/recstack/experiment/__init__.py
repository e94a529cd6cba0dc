"""Config-driven experiments: one config (schema in :mod:`.config`) defines a run end to end.

``config_files.load_config(name_or_path)`` -> ``run.train(config, reporter)`` -> a run folder
(:mod:`.run_dir`), read back by :mod:`.saved_run`. The configs shipped with recstack live in
``recstack/configs`` (package data) and are addressed by name (``basic-retrieval``).
"""
