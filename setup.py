"""Installs the ``codetr`` package, its console commands and its configs.

The repository's ``configs/`` folder is the one source of the configs; a build copies it
into the package as ``codetr/.mim/configs`` (MMDetection's layout), so that a wheel install
resolves ``co_dino/co_dino_5scale_r50_8xb2_1x_coco.py`` or a short config name
(``codetr.utils.resolve_config``). Extras name the optional requirement files.
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
CONFIGS = ROOT / 'configs'
PACKAGED_CONFIGS = Path('codetr') / '.mim' / 'configs'


def read_requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith('#')]


def read_version() -> str:
    scope: dict = {}
    exec((ROOT / 'codetr' / 'version.py').read_text(), scope)
    return scope['__version__']


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``configs/`` to ``codetr/.mim/configs`` in the build
    tree (the source tree is left as it is)."""

    def run(self) -> None:
        super().run()
        if not CONFIGS.is_dir():  # an sdist without configs/ would build a broken wheel
            raise FileNotFoundError(f'{CONFIGS} is missing: the configs ship in the package')
        target = Path(self.build_lib) / PACKAGED_CONFIGS
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(CONFIGS, target,
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc', '.*'))


setup(
    name='codetr',
    version=read_version(),
    description='Config-driven training framework for Co-DETR (collaborative hybrid assignments)',
    long_description=(ROOT / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    author='The codetr Authors',
    license='Apache-2.0',
    license_files=['LICENSE'],
    keywords=['object detection', 'detr', 'co-detr', 'co-dino', 'transformer', 'mmengine',
              'computer vision', 'pytorch'],
    classifiers=[
        'Development Status :: 4 - Beta',
        'Intended Audience :: Developers',
        'Intended Audience :: Science/Research',
        'Operating System :: POSIX :: Linux',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
        'Topic :: Scientific/Engineering :: Image Recognition',
    ],
    project_urls={
        'Paper': 'https://arxiv.org/abs/2211.12860',
        'Official Co-DETR code': 'https://github.com/Sense-X/Co-DETR',
        'MMDetection': 'https://github.com/open-mmlab/mmdetection',
    },
    python_requires='>=3.10',
    packages=find_packages(include=['codetr', 'codetr.*']),
    install_requires=read_requirements('requirements.txt'),
    extras_require={
        name: read_requirements(f'requirements/{name}.txt')
        for name in ('tests', 'export', 'fairscale', 'tensorboard')
    },
    entry_points={'console_scripts': [
        'codetr-train = codetr.cli.train:main',
        'codetr-test = codetr.cli.test:cli',
        'codetr-infer = codetr.cli.infer:main',
        'codetr-browse = codetr.cli.browse:main',
    ]},
    cmdclass={'build_py': BuildPyWithConfigs},
    include_package_data=True,
    # The CPU kernels (deformable attention, RoIAlign) are compiled from source on first use.
    package_data={'codetr': ['models/layers/ms_deform_attn/csrc/*.cpp',
                            'models/layers/roi_align/csrc/*.cpp']},
    zip_safe=False,
)
