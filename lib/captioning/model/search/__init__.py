"""Caption search over a step model: the numpy reference and the compiled TensorFlow version used in production."""
