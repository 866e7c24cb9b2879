"""The ``mm-ray`` console script."""
