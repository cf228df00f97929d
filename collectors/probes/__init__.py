"""The collector's probes: each an interval plus a collect step (see base.Probe)."""

from collectors.probes.base import Emit, Probe
from collectors.probes.config import ConfigProbe
from collectors.probes.logins import LoginProbe
from collectors.probes.metrics import MetricsProbe
from collectors.probes.modules import ModuleProbe
from collectors.probes.network import NetworkProbe
from collectors.probes.packages import PackageProbe
from collectors.probes.processes import ProcessProbe

__all__ = ["ConfigProbe", "Emit", "LoginProbe", "MetricsProbe", "ModuleProbe", "NetworkProbe",
           "PackageProbe", "Probe", "ProcessProbe"]
