"""Installs the ``codetr`` package; extras name the optional requirement files."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith('#')]


def read_version() -> str:
    scope: dict = {}
    exec((ROOT / 'codetr' / 'version.py').read_text(), scope)
    return scope['__version__']


setup(
    name='codetr',
    version=read_version(),
    description='Config-driven training framework for Co-DETR (collaborative hybrid assignments)',
    long_description=(ROOT / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['codetr', 'codetr.*']),
    install_requires=read_requirements('requirements.txt'),
    extras_require={
        name: read_requirements(f'requirements/{name}.txt')
        for name in ('tests', 'export', 'fairscale', 'tensorboard')
    },
    include_package_data=True,
    # The CPU kernels (deformable attention, RoIAlign) are compiled from source on first use.
    package_data={'codetr': ['models/layers/ms_deform_attn/csrc/*.cpp',
                            'models/layers/roi_align/csrc/*.cpp']},
    zip_safe=False,
)
