"""CareHub: the home hub daemon that watches over a resident who lives alone."""

__version__ = "0.1.0"
