"""Imports every codetr module so its registry entries exist, and sets the default scope."""
import datetime
import warnings

from mmengine import DefaultScope

from codetr.registry import SCOPE

# Packages whose import registers modules; listed once here and in the registries' locations.
MODULE_PACKAGES = ('codetr.datasets', 'codetr.datasets.transforms', 'codetr.models',
                   'codetr.evaluation', 'codetr.engine', 'codetr.visualization')


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import all codetr packages and, by default, make ``codetr`` the default scope.

    Configs carry ``default_scope='codetr'`` so the Runner does this itself; call it when
    building modules from a registry outside a Runner (scripts, notebooks, tests).
    """
    import importlib
    for name in MODULE_PACKAGES:
        importlib.import_module(name)
    if not init_default_scope:
        return
    current = DefaultScope.get_current_instance()
    if current is None or current.scope_name != SCOPE:
        if current is not None:
            warnings.warn(f'The current default scope {current.scope_name!r} is not {SCOPE!r}; '
                          f'switching to a new {SCOPE!r} scope instance.')
        # DefaultScope instances are named; a new name per call keeps earlier ones intact.
        stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')
        DefaultScope.get_instance(f'{SCOPE}-{stamp}', scope_name=SCOPE)
