"""The architecture holds: the layers contract in setup.cfg (import-linter) is kept, it has
no exceptions, and every module of engine belongs to one of its layers, so a new module
cannot slip past it. A change that adds an import cycle or an import up a layer fails here."""
import configparser
import os
import pkgutil
import subprocess
import sys

import engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "setup.cfg")
UNLAYERED = {"__main__", "_kernels", "_lda", "_text"}   # the entry point; compiled kernels


def _contracts():
    cfg = configparser.ConfigParser()
    cfg.read(CONFIG)
    return {name: dict(cfg[name]) for name in cfg.sections()
            if name.startswith("importlinter:contract:")}


def test_the_contracts_have_no_exceptions_and_cover_every_module():
    contracts = _contracts()
    assert contracts, "setup.cfg has no import-linter contract"
    for name, body in contracts.items():
        assert "ignore_imports" not in body, f"{name} makes exceptions"
    layers = contracts["importlinter:contract:layers"]["layers"]
    layered = {part.strip() for line in layers.split("\n") for part in line.split("|")
               if part.strip()}
    top = {m.name for m in pkgutil.iter_modules(engine.__path__)} - UNLAYERED
    assert top - layered == set(), f"modules in no layer: {sorted(top - layered)}"
    assert layered - top == set(), f"layers naming no module: {sorted(layered - top)}"


def test_the_layers_contract_is_kept():
    # in a process of its own: import-linter configures logging, which would silence
    # engine's logger for the tests that run after this one
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={CONFIG!r}, no_cache=True, no_logo=True))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[out.find("Broken contracts"):] or out
