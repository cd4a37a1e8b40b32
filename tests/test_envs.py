"""The conda environments (``--sdm conda``) hold every package their jobs' scripts import.

paraprobe itself is not installed in them (Snakemake puts the workflow's folder on a job
script's import path), so each environment must list the third-party packages that its
scripts import, directly or through the paraprobe modules they use.
"""

import ast
import re
import sys

import pytest
import yaml

from conftest import REPO

#: Import name -> the package that provides it in an environment file.
PROVIDED_BY = {
    "soundfile": "pysoundfile",
    "yaml": "pyyaml",
    "torch": "pytorch",
    "huggingface_hub": "transformers",  # a dependency of transformers
}


def scripts_by_env() -> dict[str, set[str]]:
    """Environment name -> the workflow scripts of the rules that use it."""
    found: dict[str, set[str]] = {}
    pattern = r'conda:\s*"\.\./envs/(\w+)\.yaml"(?:(?!\n\s*rule).)*?script:\s*"\.\./workflow_scripts/(\w+)\.py"'
    for rules in (REPO / "rules").glob("*.smk"):
        for env, script in re.findall(pattern, rules.read_text(), re.S):
            found.setdefault(env, set()).add(script)
    return found


def third_party_imports(module: str, seen: set[str]) -> set[str]:
    """Top-level names of what ``module`` (a repository module) imports, following paraprobe's own."""
    path = REPO / f"{module.replace('.', '/')}.py"
    if not path.exists():
        path = REPO / module.replace(".", "/") / "__init__.py"
    if module in seen or not path.exists():
        return set()
    seen.add(module)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in imported:
            if name.split(".")[0] in ("paraprobe", "workflow_scripts"):
                names |= third_party_imports(name, seen)
            elif name.split(".")[0] not in sys.stdlib_module_names:
                names.add(name.split(".")[0])
    return names


def listed_packages(env: str) -> set[str]:
    """Package names an environment file lists (conda's and pip's), without versions."""
    dependencies = yaml.safe_load((REPO / "envs" / f"{env}.yaml").read_text())["dependencies"]
    flat = [d for d in dependencies if isinstance(d, str)]
    flat += [d for entry in dependencies if isinstance(entry, dict) for d in entry.get("pip", [])]
    return {re.split(r"[<>=! ]", d, maxsplit=1)[0] for d in flat}


def test_every_rule_with_a_script_has_an_environment():
    scripts = {path.stem for path in (REPO / "workflow_scripts").glob("*.py")}
    assert set().union(*scripts_by_env().values()) == scripts


@pytest.mark.parametrize("env", sorted(scripts_by_env()))
def test_an_environment_lists_what_its_scripts_import(env):
    imported = set().union(*(third_party_imports(f"workflow_scripts.{s}", set()) for s in scripts_by_env()[env]))
    assert imported, env
    missing = {PROVIDED_BY.get(name, name) for name in imported} - listed_packages(env)
    assert not missing, f"envs/{env}.yaml lacks {sorted(missing)}"
