"""The captioning model: CNN encoder, caption decoders, search, training, and the model directory that holds a trained decoder."""
