"""The one training engine of every torch model (:mod:`harness.training.engine`)."""
