"""Storage: the one module that opens URIs, and the on-disk formats shared between stages that are not a dataset or a model (the feature store, the bulk captioning output)."""
