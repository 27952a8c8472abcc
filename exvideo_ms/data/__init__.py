"""Training data: clip lists in three formats (``sources``), frame sampling and transforms (``transforms``),
motion buckets (``motion``), and the step-indexed dataset (``dataset``)."""
