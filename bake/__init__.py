"""bake: declarative recipes → verified, signed, pinnable golden images."""

__version__ = "0.1.0"
