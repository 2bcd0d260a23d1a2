"""maskgrpo: reinforcement learning for masked discrete diffusion models with MaskGRPO."""

__version__ = "0.1.0"
