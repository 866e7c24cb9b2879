"""Working with a Ray cluster from the command line: job submission and its authentication."""
