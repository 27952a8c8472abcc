"""ExVideo / Stable Video Diffusion for MindSpore."""
__version__ = "0.1.0"


def __getattr__(name):  # lazy, so that `import exvideo_ms.config` does not build MindSpore graphs
    if name == "SVDPipeline":
        from exvideo_ms.pipeline import SVDPipeline
        return SVDPipeline
    raise AttributeError(name)
