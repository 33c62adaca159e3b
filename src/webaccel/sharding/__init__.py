"""Pipeline parallelism: one model split into stages on several workers (issue 19).

* :mod:`~webaccel.sharding.split` -- cutting an ONNX graph at layer boundaries
  with onnx's Extractor (pure, no I/O beyond files).
* :mod:`~webaccel.sharding.stages` -- a registry model as registered stage models.
* :mod:`~webaccel.sharding.plan` -- how many stages (memory budget) and sizes (cost).
* :mod:`~webaccel.sharding.run` -- the driver: one pool session per stage,
  micro-batches in flight, a lost stage re-placed and its micro-batches replayed.
"""
