"""Image captioning as Spark batch jobs: CNN features, an LSTM decoder, bulk captioning."""

__version__ = "0.1.0"
