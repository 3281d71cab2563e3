"""README, Makefile, pyproject.toml, environment.yml and .ci/run must tell the same story."""
import pathlib
import re
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject_dependencies():
    deps = pyproject()["project"]["dependencies"]
    env = environment()["dependencies"]
    pip = next(d["pip"] for d in env if isinstance(d, dict) and "pip" in d)
    # conda passes this list to pip as a requirements file: only requirement specs (pip rejects
    # --no-build-isolation there, and the package's build needs torch installed first)
    assert all(not s.lstrip().startswith("-") for s in pip), [s for s in pip if s.lstrip().startswith("-")]
    env_specs = {_name(s): s.replace(" ", "") for s in pip}
    py_specs = {_name(s): s.replace(" ", "") for s in deps}
    assert env_specs == py_specs, "environment.yml pip section and pyproject dependencies differ"
    # ...so the package is a second step, with the flag, in both the file's header and the README
    step = 'pip install --no-build-isolation -e ".[dev,notebooks]"'
    for name in ("environment.yml", "README.md"):
        assert step in " ".join((ROOT / name).read_text().split()), name  # wrapped lines joined


def test_no_deps_packages_agree_everywhere():
    """A package installed without its declared dependencies (panopticapi-lite: its numpy<2 pin would break
    pandas) is installed so by the Makefile's setup and named with the same pin and --no-deps in pyproject.toml,
    environment.yml and the README, and is in no dependency list (pip or conda would install its pins)."""
    makefile = (ROOT / "Makefile").read_text()
    setup = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    specs = re.findall(r"pip install (?:-q )?--no-deps (\S+)", setup)
    assert "panopticapi-lite==0.2.0" in specs
    editable = setup.index("-e \"")
    for spec in specs:
        assert setup.index(spec) > editable, f"{spec}: install it after the package (the editable install resolves deps)"
        command = f"pip install --no-deps {spec}"
        for name in ("pyproject.toml", "environment.yml", "README.md"):
            assert command in " ".join((ROOT / name).read_text().split()), f"{name} does not say `{command}`"
        env_pip = next(d["pip"] for d in environment()["dependencies"] if isinstance(d, dict) and "pip" in d)
        listed = [*pyproject()["project"]["dependencies"], *env_pip,
                  *(s for extra in pyproject()["project"]["optional-dependencies"].values() for s in extra)]
        assert _name(spec) not in {_name(s) for s in listed}, f"{spec} must not be in a dependency list"


def test_python_version_agrees():
    env = environment()["dependencies"]
    python = next(d for d in env if isinstance(d, str) and d.startswith("python"))
    assert python == "python=3.11"
    assert pyproject()["project"]["requires-python"].startswith(">=3.11")


def test_torch_pins_agree_everywhere():
    deps = pyproject()["project"]["dependencies"]
    pins = sorted(d for d in deps if _name(d) in ("torch", "torchvision"))
    assert pins == ["torch==2.14.1", "torchvision==0.29.1"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_PINS := (.+)$", makefile, re.M).group(1).split() == pins
    assert "torch==2.14.1" in pyproject()["build-system"]["requires"]
    readme = (ROOT / "README.md").read_text()
    assert all(p in readme for p in pins)


def test_extras_and_console_script():
    project = pyproject()["project"]
    assert {"dev", "notebooks", "d2"} <= set(project["optional-dependencies"])
    assert project["scripts"]["workbench"] == "workbench.cli:main"


def test_readme_commands_exist_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)
    assert "--no-build-isolation" in makefile


def test_top_level_layout():
    for name in ("notebooks", "workbench", "ops", "data", "tests", "bench", "environment.yml"):
        assert (ROOT / name).exists(), name
