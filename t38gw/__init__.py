"""t38gw: a T.38 fax-over-IP gateway."""

__version__ = "0.1.0"
