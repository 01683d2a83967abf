"""Training models: the engine (``engine``: plain and DP-SGD training), the model farm
(``farm``: many folders, atomically, in parallel) and its Ray backend (``ray_backend``), the
extra shadows' design (``design``) and stage (``shadows``), per-target models
(``per_target``; what ``--attack reference`` reads) and the offline demo (``demo``).
"""
