"""The model registry: complete models (trunk + head + grid + k), gated promotion, serving.

- :mod:`mlt.registry.model`: :class:`CompleteModel` and its weights-only ``complete.pt``;
- :mod:`mlt.registry.pyfunc`: building one from a head run and logging it as an MLflow model;
- :mod:`mlt.registry.promote`: the ``@champion`` gate;
- :mod:`mlt.registry.predict`: loading a registered model and scoring images;
- :mod:`mlt.registry.server`: a local ``mlflow server`` (``mlt ui``, tests).

MLflow is imported by the submodules that need it, not here.
"""
