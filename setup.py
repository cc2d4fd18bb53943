"""Package layout (metadata and dependencies are in setup.cfg).

The recipes and the shipped split references stay in the repository's top-level ``recipes/`` and
``splits/expected/`` folders, where people edit them; they are installed as the subpackages ``meid_bench.recipes``
and ``meid_bench.references`` and read with ``importlib.resources``, the same way from a checkout (editable
install), a wheel or an sdist. setup.cfg cannot add mapped packages to ``find:``, hence this file.
"""

from setuptools import find_packages, setup

DATA_PACKAGES = {"meid_bench.recipes": "recipes", "meid_bench.references": "splits/expected"}

setup(
    packages=find_packages(include=["meid_bench", "meid_bench.*"]) + list(DATA_PACKAGES),
    package_dir=DATA_PACKAGES,
    package_data={"meid_bench": ["py.typed"], "meid_bench.recipes": ["*.yaml"], "meid_bench.references": ["*.json"]},
)
