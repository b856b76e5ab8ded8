import json

import pytest

from captioning.data.text import CleaningConfig, clean_caption
from captioning.data.vocab import RESERVED, Vocabulary, build_vocabulary
from captioning.serialization import from_dict


def test_cleaning_reproduces_original_rules():
    assert clean_caption("A black dog's 2 toys, in the Park!") == ["black", "dogs", "toys", "in", "the", "park"]


def test_each_cleaning_rule_is_a_switch():
    text = "A Dog, 3rd in line"
    assert clean_caption(text, CleaningConfig(lowercase=False)) == ["Dog", "in", "line"]
    assert clean_caption(text, CleaningConfig(strip_punctuation=False)) == ["dog,", "in", "line"]
    assert clean_caption(text, CleaningConfig(drop_single_letter=False)) == ["a", "dog", "in", "line"]
    assert clean_caption(text, CleaningConfig(drop_with_digits=False)) == ["dog", "3rd", "in", "line"]


def test_cleaning_config_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown CleaningConfig settings"):
        from_dict(CleaningConfig, {"lowercase": True, "stem": True})


def _vocab(min_count=2):
    captions = [["dog", "runs"], ["dog", "jumps"], ["cat", "runs"], ["dog", "sits"]]
    return build_vocabulary(captions, min_count=min_count)


def test_vocabulary_keeps_frequent_words_in_stable_order():
    vocab = _vocab()
    assert vocab.words == RESERVED + ("dog", "runs")
    assert vocab.counts == {"dog": 3, "runs": 2}
    assert vocab.dropped_words == 3
    assert (vocab.pad_id, vocab.unk_id, vocab.start_id, vocab.end_id) == (0, 1, 2, 3)


def test_encode_pads_truncates_and_maps_unknown():
    vocab = _vocab()
    assert vocab.encode("Dog runs away", max_length=7) == [2, 4, 5, 1, 3, 0, 0]
    assert vocab.encode("dog runs dog runs dog", max_length=5) == [2, 4, 5, 4, 3]
    assert vocab.decode([2, 4, 5, 1, 3, 4, 0]) == ["dog", "runs", "<unk>"]


def test_vocabulary_json_round_trip_keeps_ids_and_cleaning():
    vocab = build_vocabulary([["dog"]] * 3, min_count=1, cleaning=CleaningConfig(drop_single_letter=False))
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab
    assert again.encode("a Dog", 5) == vocab.encode("a Dog", 5) == [2, 1, 4, 3, 0]
    data = json.loads(vocab.to_json())
    assert data["counts"]["dog"] == 3 and data["format"] == "captioning.vocabulary/1"


def test_vocabulary_json_errors_name_the_source():
    with pytest.raises(ValueError, match="model/vocab.json: not JSON"):
        Vocabulary.from_json("{oops", source="model/vocab.json")
    with pytest.raises(ValueError, match="not a vocabulary file"):
        Vocabulary.from_json('{"format": "other"}')
