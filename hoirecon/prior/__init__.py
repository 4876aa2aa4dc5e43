"""The project's own geometry diffusion prior (DiffHOI's prior, small and CPU-trainable).

- ``geometry``: the 64x64 geometry renderings (object 5 ch, hand 7 ch), their encoding (the
  DiffHOI encoding) and the random viewpoints, shared by training data and score distillation.
- ``model``: ``GeometryPrior`` (diffusers UNet + category embedding), weights files,
  ``load_geometry_prior()`` (the shipped ``weights/hoirecon/prior_small.pt`` by default).
- ``data``: ``render_prior_dataset`` renders the training pairs from procedural objects and
  synthetic grasps.
- ``train``: ``train_prior`` (resumable), ``export_weights``.
- ``sample``: ``ddim_sample``, the B.1 figure (``sample_figure``, ``write_sample_grid``).
- ``sds``: score distillation for the fit stage (``score_distillation_loss``); works with any
  prior that has ``predict_noise(x_t, t, hand_cond, category, guidance_scale=...)``.

Submodules import ``diffusers`` lazily (only when a model is built).
"""
