"""The thin click CLI over :mod:`snapws.ops`."""
