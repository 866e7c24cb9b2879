"""The synthetic tri-modal benchmark with a known Bayes-optimal accuracy (``mm-ray make-shards``)."""
