"""The bridge's features, one package each. A feature imports the kernel and the
persistence layer, never another feature (see :mod:`bridge.kernel.ports`)."""
