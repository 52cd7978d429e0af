"""Import log for the end-to-end tests: put this folder on PYTHONPATH of a driver run.

Python imports ``sitecustomize`` at start-up. In a ``cnnbench`` process (the console script) this
registers an exit hook that appends one JSON line to ``$CNNBENCH_IMPORT_LOG``: the command line
and the repository paths of every cnnbench module the process imported. The DVC test holds them
against each stage's deps. Without the variable nothing is done. Never used outside the tests.
"""

import atexit
import json
import os
import sys
from pathlib import Path


def _log() -> None:
    package = sys.modules.get("cnnbench")
    if package is None:
        return
    root = Path(package.__file__).resolve().parents[2]  # the checkout: src/cnnbench/__init__.py
    modules = sorted(
        str(Path(m.__file__).resolve().relative_to(root))
        for name, m in list(sys.modules.items())
        if (name == "cnnbench" or name.startswith("cnnbench.")) and getattr(m, "__file__", None)
    )
    with open(os.environ["CNNBENCH_IMPORT_LOG"], "a") as fh:
        fh.write(json.dumps({"argv": [Path(sys.argv[0]).name, *sys.argv[1:]], "modules": modules}) + "\n")


if os.environ.get("CNNBENCH_IMPORT_LOG") and Path(sys.argv[0] if sys.argv else "").name == "cnnbench":
    atexit.register(_log)
