"""Users' own captures: COLMAP models and photos -> physinv data sets (poses, lens distortion,
masks, normalisation). Layer: above ``io``, beside ``synth``; the pipelines do not import it."""
