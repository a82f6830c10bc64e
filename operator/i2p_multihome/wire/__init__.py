"""Wire codecs: bytes in, typed values out. No I/O, no clocks, no randomness of their own."""
