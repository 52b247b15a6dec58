"""Heavy Optimizer: a Samba share turned into a job queue for portfolio optimisation."""

__version__ = "0.1.0"
