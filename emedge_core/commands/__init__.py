"""Sub-commands of the ``emedge`` CLI; each module has ``register(subparsers)``."""
