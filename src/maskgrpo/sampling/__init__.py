"""Rollout samplers for masked diffusion models."""
