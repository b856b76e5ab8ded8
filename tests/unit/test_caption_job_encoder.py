"""caption-images rebuilds the CNN a model's training features came from, pooling included."""
from types import SimpleNamespace

import pytest

from captioning.model.encoder_spec import EncoderConfig, encoder_identity
from captioning.errors import InputError
from captioning.model.captioner import encoder_for


def model_trained_on(encoder: EncoderConfig):
    return SimpleNamespace(features=encoder_identity(encoder), uri="models/v1")


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_the_models_pooling_and_seed_are_used(pooling):
    trained = EncoderConfig(backbone="resnet50", weights="none", seed=7, pooling=pooling)
    rebuilt = encoder_for(model_trained_on(trained))
    assert (rebuilt.backbone, rebuilt.weights, rebuilt.seed, rebuilt.pooling) == ("resnet50", "none", 7, pooling)
    assert encoder_identity(rebuilt) == encoder_identity(trained)


def test_a_weights_file_model_without_the_file_is_refused_with_the_option_to_pass():
    features = dict(encoder_identity(EncoderConfig(backbone="resnet50", weights="none")), weights="file:sha256=abc")
    with pytest.raises(InputError, match="--backbone-weights"):
        encoder_for(SimpleNamespace(features=features, uri="models/v2"))
