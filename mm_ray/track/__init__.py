"""Experiment tracking (``track.*``): training runs and sweeps logged to TensorBoard and MLflow.

- ``mm_ray.track.run.RunTracker``: one ``mm-ray train`` run, logged by the driver as each epoch's metrics
  arrive from rank 0 (params, per-epoch metrics, the curves PNG, the best checkpoint's path).
- ``mm_ray.track.tune.tune_callbacks``: Ray Tune's own loggers for a sweep (``TBXLoggerCallback``,
  ``MLflowLoggerCallback``), one MLflow run per trial under an experiment named after the sweep.
- ``mm_ray.track.mlflow_store``: the one place that imports MLflow (the ``[track]`` extra), resolves
  ``track.mlflow`` to a tracking URI and names metrics and params the way MLflow accepts them.
"""
