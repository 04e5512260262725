"""nas: neural architecture search for the most accurate image classifier under a parameter budget."""

__version__ = "0.1.0"
