"""The data plane: what clients send the destination, served by its backends. Streams
(`streams.py`) and datagrams (`datagrams.py`) behind one entry point, `DataPlane`."""

from i2p_multihome.dataplane.service import DataPlane

__all__ = ["DataPlane"]
