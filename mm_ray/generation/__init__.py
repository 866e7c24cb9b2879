"""Cross-modal generation: ``generate`` (a checkpoint over shards, Ray Data), the files it writes
(``media``), and the demo benchmark's measurement of generated images (``bench``)."""
