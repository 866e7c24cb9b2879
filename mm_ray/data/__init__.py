"""Reading webdataset shards into samples, quarantining bad input, and the Ray Data pipeline."""
