"""CI: the sdist and the wheel hold what an installation needs (every recipe, every shipped reference, the licence,
py.typed), and the sdist also the docs and tests. Usage: python .ci/check_dist.py SDIST WHEEL"""

import re
import sys
import tarfile
import zipfile
from pathlib import Path

checkout = Path(__file__).resolve().parents[1]
sdist, wheel = sys.argv[1], sys.argv[2]
recipes = sorted(p.name for p in (checkout / "recipes").glob("*.yaml"))
references = sorted(p.name for p in (checkout / "splits" / "expected").glob("*.json"))

with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
missing = [f"meid_bench/recipes/{r}" for r in recipes] + [f"meid_bench/references/{r}" for r in references]
missing += ["meid_bench/py.typed", "meid_bench/cli/__init__.py"]
missing = [name for name in missing if name not in names]
if not any(re.search(r"\.dist-info/(licenses/)?LICENSE$", name) for name in names):
    missing.append("*.dist-info/LICENSE")
assert not missing, f"{wheel}: missing {missing}"

with tarfile.open(sdist) as archive:
    root = archive.getnames()[0].split("/")[0]
    names = {name.removeprefix(root + "/") for name in archive.getnames()}
wanted = [f"recipes/{r}" for r in recipes] + [f"splits/expected/{r}" for r in references]
wanted += ["LICENSE", "README.md", "setup.py", "setup.cfg", "pyproject.toml", "docs/formats.md", "tests/conftest.py"]
missing = [name for name in wanted if name not in names]
assert not missing, f"{sdist}: missing {missing}"
print(f"{Path(wheel).name}: {len(recipes)} recipes, {len(references)} references, licence; "
      f"{Path(sdist).name}: sources, docs and tests")
