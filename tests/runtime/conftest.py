"""The runtime tests share the export tests' small random models (tests/export/conftest.py)."""

from export.conftest import EXPORT_SIZE, TOL, model, random_model  # noqa: F401
