# Importing a subpackage registers its modules; each subpackage's __init__ imports its files.
from . import (  # noqa: F401
    aux_heads,
    backbones,
    data_preprocessors,
    detectors,
    ema,
    layers,
    losses,
    necks,
    query_heads,
    task_modules,
)
