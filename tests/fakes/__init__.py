"""Fakes that implement tsmeter's ports in memory, for tests through the services."""
