"""herdwatch: security telemetry for cloud clone fleets. This package is the top layer: the `herdwatch`
CLI, its commands, the demo and the evaluation report. It is the only code that imports every other
package (see docs/ARCHITECTURE.md)."""

from contract import __version__

__all__ = ["__version__"]
