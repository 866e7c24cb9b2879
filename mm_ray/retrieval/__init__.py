"""Cross-modal retrieval: per-modality embeddings of a shard set (``embed``) and their scores (``metrics``)."""
