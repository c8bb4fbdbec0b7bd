"""The dashboard screen and its confirmation dialog."""

from chanctl.tui.screens.confirm import ConfirmScreen
from chanctl.tui.screens.dashboard import DashboardScreen

__all__ = ["ConfirmScreen", "DashboardScreen"]
