"""nionswift-emedge inside NION Swift (a thin adapter over emedge_core and hpc_client).

Swift's plug-in manager imports this package from the ``nionswift_plugin`` namespace
and builds every ``*Extension`` class it finds here.
"""
from nionswift_plugin.emedge.extension import EmedgeExtension

__all__ = ["EmedgeExtension"]
