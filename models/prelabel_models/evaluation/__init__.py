"""`prelabel evaluate` and `prelabel calibrate`: how good the masks are, whether the uncertainty
points at the mistakes, and one temperature that makes the confidences honest.

``metrics`` holds the pure numerics; ``evaluate`` and ``calibration`` run a model package through
the server's own inference path (:class:`~prelabel_models.predictor.Predictor` and
:func:`~prelabel_models.postprocessing.segment_maps`) and feed them.
"""
