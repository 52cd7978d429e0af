"""Model zoo of the study. Use :func:`build_model`."""

from .registry import build_model, model_arguments, model_names, register

__all__ = ["build_model", "model_arguments", "model_names", "register"]
