"""Build glue for the compiled ops lives here (issue 3); metadata is in pyproject.toml."""
from setuptools import setup

setup()
