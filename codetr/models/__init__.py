# Importing a subpackage registers its modules; each subpackage's __init__ imports its files.
from . import backbones, data_preprocessors, layers, losses, necks, task_modules  # noqa: F401
