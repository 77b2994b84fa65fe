"""Implementations of tsmeter's ports; imported as ``tsmeter.adapters``."""
