"""The one compiled piece: the connector reader's per-exec path (collectors/probes/_execread.c).

Optional: where it cannot be built (no C compiler, not Linux) the install goes on and the agent reads exec
events in Python (it logs which reader runs). Everything else is configured in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("collectors.probes._execread", ["collectors/probes/_execread.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra"])])
