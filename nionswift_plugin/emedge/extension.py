"""The Swift extension object: created once by the plug-in manager with an API broker."""
from __future__ import annotations

import typing

from emedge_core import __version__


class EmedgeExtension:
    """nionswift-emedge's entry point in Swift."""

    extension_id = "nion.swift.extension.emedge"

    def __init__(self, api_broker: typing.Any) -> None:
        self.api = api_broker.get_api(version="~1.0", ui_version="~1.0")
        self.version = __version__

    def close(self) -> None:
        pass
