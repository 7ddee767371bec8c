"""Print pip constraints pinning every dependency of the core and `dev` sets to its lower bound.

`make test-oldest` installs with them, so a floor in pyproject.toml that no longer works fails CI.
torch stays at the local CPU wheel (constraints/cpu.txt): it is the only CPU build of torch here.
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
    name, floor = re.match(r"([A-Za-z0-9_.\-\[\]]+)\s*(?:>=\s*([^,;\s]+))?", requirement).groups()
    name = name.split("[")[0]
    if name == "torch":
        continue
    if floor is None:
        sys.exit(f"constraints/lower_bounds.py: {requirement!r} in pyproject.toml has no lower bound; give it one")
    print(f"{name}=={floor}")
