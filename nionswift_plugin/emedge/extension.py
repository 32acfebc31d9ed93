"""The Swift extension object: created once by the plug-in manager with an API broker.

It registers the panels (hidden until shown from the *eMEDGE* menu or *Window* menu), one menu
item per panel, and the console startup that imports ``emedge`` into every Python console.
"""
from __future__ import annotations

import typing

from emedge_core import __version__
from nionswift_plugin.emedge.console import ConsoleStartup
from nionswift_plugin.emedge.panels.experiment import ExperimentPanel
from nionswift_plugin.emedge.panels.export import ExportPanel
from nionswift_plugin.emedge.panels.hpc import HPCPanel
from nionswift_plugin.emedge.panels.remote import RemotePanel
from nionswift_plugin.emedge.panels.stream import StreamPanel

MENU_ID = "emedge_menu"


class _ShowPanel:
    """A menu item that shows one panel in the window it is chosen in."""

    menu_id = MENU_ID
    menu_name = "eMEDGE"
    menu_before_id = "window_menu"

    def __init__(self, panel: typing.Any) -> None:
        self.panel_id = panel.panel_id
        self.menu_item_name = f"Show {panel.panel_name}"

    def menu_item_execute(self, window: typing.Any) -> None:
        # Swift's public API (Facade ~1.0) has no dock panels; the document controller is the only way
        window._document_controller.find_dock_panel(self.panel_id).show()


class EmedgeExtension:
    """nionswift-emedge's entry point in Swift."""

    extension_id = "nion.swift.extension.emedge"

    def __init__(self, api_broker: typing.Any) -> None:
        from nion.utils import Registry

        self.api = api_broker.get_api(version="~1.0", ui_version="~1.0")
        self.version = __version__
        self.panels = [ExperimentPanel(), ExportPanel(), HPCPanel(), RemotePanel(), StreamPanel()]
        self._panel_refs = [self.api.create_panel(p) for p in self.panels]
        self._menu_refs = [self.api.create_menu_item(_ShowPanel(p)) for p in self.panels]
        self._console = ConsoleStartup()
        Registry.register_component(self._console, {"console-startup"})

    def close(self) -> None:
        from nion.swift import Workspace
        from nion.utils import Registry

        Registry.unregister_component(self._console, {"console-startup"})
        for panel in self.panels:
            panel.close()
            Workspace.WorkspaceManager().unregister_panel(panel.panel_id)
