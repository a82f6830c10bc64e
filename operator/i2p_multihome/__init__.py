"""i2p-multihome: one I2P Destination hosted invisibly on several routers (Proposal 140)."""

__version__ = "0.1.0"
