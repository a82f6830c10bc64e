"""The I2CP session layer: asyncio I/O over the wire codecs, one connection per router."""
