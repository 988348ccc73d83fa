"""The op registry: one definition per canonical op (see ``registry``)."""
from .registry import Attr, OpDef, all_ops, get

__all__ = ["Attr", "OpDef", "all_ops", "get"]
