"""Diffusion models for the engine: diffusers folder loading (``models``) and tiny test models (``tiny``)."""

from training.engine.diffusion.models import DiffusionComponents, load_diffusion

__all__ = ["DiffusionComponents", "load_diffusion"]
