"""Experiments that reproduce the paper's findings (``mlt experiment NAME``, ``make results``).

An experiment is a YAML spec under ``configs/experiments/`` (:mod:`mlt.experiments.spec`): a base
run config, arms (config overrides), seeds and the experiment's own options. The runner
(:mod:`mlt.experiments.runner`) takes each arm through the pipeline's stages (pretraining and
extraction are skipped when their outputs exist; heads are skipped per seed when a finished head
run of the same inputs has its test figures), and the experiment's module turns the figures into
a section of ``docs/RESULTS.md`` with tables and PNG plots (:mod:`mlt.experiments.report`).
"""
