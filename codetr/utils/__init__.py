from .config_path import (
    AmbiguousConfigError,
    ConfigNotFoundError,
    configs_root,
    list_configs,
    resolve_config,
)
from .setup_env import register_all_modules

__all__ = ['register_all_modules', 'resolve_config', 'configs_root', 'list_configs',
           'ConfigNotFoundError', 'AmbiguousConfigError']
