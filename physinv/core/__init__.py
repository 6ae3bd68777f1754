"""Differentiable building blocks shared by every pipeline. Nothing here imports a pipeline."""
