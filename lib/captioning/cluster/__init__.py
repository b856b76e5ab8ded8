"""Where Spark runs: the session builder, Spark barrier stages for TensorFlow workers, a local standalone cluster."""
