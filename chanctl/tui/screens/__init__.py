"""The dashboard screen and the screens it opens: a confirmation, one traffic line whole."""

from chanctl.tui.screens.confirm import ConfirmScreen
from chanctl.tui.screens.dashboard import DashboardScreen
from chanctl.tui.screens.entry import EntryScreen

__all__ = ["ConfirmScreen", "DashboardScreen", "EntryScreen"]
