"""pyproject's dependency lower bounds: the installed versions satisfy them, and they are no lower than
what the code needs (the minimum set was installed in a clean venv and its quick tests run; see the
comment in pyproject.toml)."""
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip('tomllib')  # Python >= 3.11


def _requirements():
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    return {Requirement(r).name.lower().replace('_', '-'): Requirement(r) for r in project['dependencies']}


def _lower_bound(req: Requirement) -> Version:
    bounds = [Version(s.version) for s in req.specifier if s.operator in ('>=', '==', '~=')]
    assert bounds, f'{req}: no lower bound'
    return max(bounds)


def test_installed_versions_satisfy_pyproject():
    for name, req in _requirements().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f'{name} is not installed')
        assert req.specifier.contains(installed, prereleases=True), f'{name} {installed} does not satisfy {req}'


def test_lower_bounds_cover_what_the_code_uses():
    """Each bound is no lower than the oldest version the quick tests passed with (a clean venv; see the
    comment in pyproject.toml for what failed below it)."""
    reqs = _requirements()
    writer = (ROOT / 'timm_multilabel' / 'relabel' / 'writer.py').read_text()
    if 'datasets.List(' in writer:  # datasets.List is new in datasets 4.0
        assert _lower_bound(reqs['datasets']) >= Version('4.0')
    if _lower_bound(reqs['torchvision']) >= Version('0.29'):  # no torchvision.io.VideoReader: datasets 4.8.5 guards it
        assert _lower_bound(reqs['datasets']) >= Version('4.8.5')
    if 'use_byte_stream_split' in writer:  # on float16 / integer columns: pyarrow 15 writes FLOAT/DOUBLE only
        assert _lower_bound(reqs['pyarrow']) >= Version('16.0')
    if 'data_seed=' in (ROOT / 'train.py').read_text():  # DataLoaderConfiguration(data_seed=): accelerate 1.1
        assert _lower_bound(reqs['accelerate']) >= Version('1.1')
    assert _lower_bound(reqs['safetensors']) >= Version('0.4.3')  # accelerate requires it
    assert _lower_bound(reqs['timm']) >= Version('1.0.31')  # timm.task, the readers' target keys
