"""MICO's on-disk format: where every file lives (``layout``), atomic writes (``fileio``), the
split reconstruction from seeds (``splits``), seeds, solutions and predictions (``records``),
and which configuration wrote the predictions (``manifest``).  Nothing here imports torch.
"""
