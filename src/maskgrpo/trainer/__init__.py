"""Training loops: masked-diffusion SFT and MaskGRPO, plus evaluation and run outputs."""
