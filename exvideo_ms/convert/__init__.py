"""Checkpoint conversion: one small table per source layout (``sgm``, ``diffusers``, ``diffsynth``), the
readers (``sources``) and the planner/writer (``converter``)."""
