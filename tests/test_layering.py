"""The import rules of DESIGN.md, checked on the source of every module.

    ppl  <-  inference  <-  dft
                        <-  bio
and the application layer ``diffsci`` (CLI, tour) above all of them.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ppl", "inference", "dft", "bio", "diffsci")

FORBIDDEN = {
    "ppl": {"inference", "dft", "bio", "diffsci"},
    "inference": {"dft", "bio", "diffsci"},
    "dft": {"bio", "diffsci"},
    "bio": {"dft", "diffsci"},
    "diffsci": set(),
}

# The model-free core of inference depends on torch alone: any package may use it on a plain potential.
MODEL_FREE = (
    "inference/optim",
    "inference/checkpoint",
    "inference/implicit",
    "inference/diagnostics",
    "inference/mcmc/hmc",
    "inference/mcmc/nuts",
    "inference/mcmc/adaptation",
    "inference/mcmc/integrator",
    "inference/mcmc/jit",
    "inference/tracing",
)


def _modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def imported_packages(path: Path, root: Path = ROOT) -> set[str]:
    """Top-level packages imported by a module, with relative imports resolved against its location."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = path.relative_to(root).parts[:-1]  # the package the module belongs to
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module.split(".")[0])
            else:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                found.add(base[0] if base else (node.module or "").split(".")[0])
    return found


def is_model_free(path: Path) -> bool:
    rel = path.relative_to(ROOT).with_suffix("").as_posix()
    return any(rel == m or rel.startswith(m + "/") for m in MODEL_FREE)


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_point_one_way(path):
    package = path.relative_to(ROOT).parts[0]
    bad = imported_packages(path) & FORBIDDEN[package]
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}, which DESIGN.md's layering forbids for {package}"
    if is_model_free(path):
        assert "ppl" not in imported_packages(path), (
            f"{path.relative_to(ROOT)} is in the model-free core of inference and must not import ppl"
        )


def test_checker_sees_violations(tmp_path):
    """The checker itself catches absolute and relative imports across layers."""
    fake = tmp_path / "ppl" / "sub"
    fake.mkdir(parents=True)
    (fake / "mod.py").write_text("from ...inference import optim\nimport dft.scf\nfrom . import sibling\n")
    assert imported_packages(fake / "mod.py", root=tmp_path) == {"inference", "dft", "ppl"}
