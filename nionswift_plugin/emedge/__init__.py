"""nionswift-emedge inside NION Swift (a thin adapter over emedge_core and hpc_client).

Swift's plug-in manager imports this package from the ``nionswift_plugin`` namespace and
builds every ``*Extension`` class found in it and in its submodules. The extension lives in
:mod:`.extension` only: re-exporting the class here as well would build it twice.
"""
from nionswift_plugin.emedge import extension

__all__ = ["extension"]
