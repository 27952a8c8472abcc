"""EDM diffusion as small pure functions: schedules and scalings (``edm``), samplers (``sampler``),
classifier-free guidance (``guidance``). Nothing here knows about networks."""
