"""The console commands; each is also a script in the repository, a thin wrapper of it.

=================  =====================================  ===========================
command            module                                 script in a clone
=================  =====================================  ===========================
``codetr-train``   :mod:`codetr.cli.train`                ``tools/train.py``
``codetr-test``    :mod:`codetr.cli.test`                 ``tools/test.py``
``codetr-infer``   :mod:`codetr.cli.infer`                ``demo/image_demo.py``
``codetr-browse``  :mod:`codetr.cli.browse`               ``tools/analysis_tools/browse_dataset.py``
=================  =====================================  ===========================

Every command takes a config path or a short config name
(:func:`codetr.utils.resolve_config`) and appends the current directory to ``sys.path``
before the config is read, so that ``custom_imports=dict(imports=['projects.x'])`` imports
a ``projects/`` folder of the directory the command runs in.
"""
