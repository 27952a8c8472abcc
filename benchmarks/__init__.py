"""Side-by-side MindSpore / PyTorch benchmarks; each writes its table into docs/benchmarks.md."""
