"""The harder sample scenes: two groups and their relation, and crowded scenes unlike both."""
from __future__ import annotations

from collections import Counter

import pytest

from captioning.data.sample.config import SALIENCE_MARGIN, SampleConfig
from captioning.data.sample.generate import generate_sample_dataset, plan_images
from captioning.data.sample.relations import RELATIONS, relation_of
from captioning.data.text import clean_caption
from captioning.data.vocab import build_vocabulary

_WORDS = {"left": ["to", "the", "left", "of"], "right": ["to", "the", "right", "of"], "above": ["above"], "below": ["below"]}
_INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}


@pytest.fixture(scope="module")
def relations():
    return plan_images(SampleConfig(num_images=2000, difficulty="relations"))


def _core(group) -> list[str]:
    count = {1: [], 2: ["two"], 3: ["three"]}[group.count]  # "a" is dropped by cleaning
    return [*count, group.size, group.colour, group.shape + ("s" if group.count > 1 else "")]


def _contains(tokens, phrase) -> bool:
    return any(tokens[k : k + len(phrase)] == phrase for k in range(len(tokens) - len(phrase) + 1))


def test_relation_of_cells():
    assert relation_of([(0, 0), (1, 0)], [(0, 2)]) == "left"  # apart in columns, rows overlap
    assert relation_of([(1, 1)], [(0, 0), (0, 1), (0, 2)]) == "below"
    assert relation_of([(0, 0)], [(1, 2)]) is None  # diagonal: not clear-cut
    assert relation_of([(0, 0), (0, 1)], [(0, 1)]) is None  # overlapping


def test_every_scene_has_two_groups_a_clear_main_one_and_a_clear_relation(relations):
    assert Counter(image.scene.relation for image in relations).keys() == set(RELATIONS)
    for image in relations:
        main, other = image.scene.groups
        assert main.salience >= SALIENCE_MARGIN * other.salience
        assert not set(main.cells) & set(other.cells)
        assert image.scene.relation == relation_of(main.cells, other.cells)
        xs = [sum(i.center[0] for i in g.instances) / len(g.instances) for g in (main, other)]
        ys = [sum(i.center[1] for i in g.instances) / len(g.instances) for g in (main, other)]
        picture = {"left": xs[0] < xs[1], "right": xs[0] > xs[1], "above": ys[0] < ys[1], "below": ys[0] > ys[1]}
        assert picture[image.scene.relation], image.captions  # the words say what the pixels show


def test_captions_name_both_groups_and_the_relation_in_the_usual_words(relations):
    full, inverse, images_with_full = 0, 0, 0
    for image in relations:
        main, other = image.scene.groups
        relation = image.scene.relation
        found = 0
        for caption in image.captions:
            tokens = clean_caption(caption)
            if _contains(tokens, _core(main) + _WORDS[relation] + _core(other)):
                found += 1
            elif _contains(tokens, _core(other) + _WORDS[_INVERSE[relation]] + _core(main)):
                inverse += 1
        full += found
        images_with_full += found > 0
    total = 5 * len(relations)
    # six word choices, each the usual word 80% of the time: the whole usual phrase in a quarter of the captions
    assert 0.2 * total < full < 0.35 * total
    assert images_with_full > 0.7 * len(relations)
    assert 0.02 * total < inverse < 0.1 * total  # some annotators put the other group first


def test_attribute_words_cannot_be_guessed_from_word_statistics(relations):
    for index in (0, 1):
        colours = Counter(image.scene.groups[index].colour for image in relations)
        assert max(colours.values()) / len(relations) < 0.22
    vocabulary = build_vocabulary([clean_caption(c) for image in relations for c in image.captions], min_count=10)
    assert vocabulary.dropped_words == 0 and 40 <= vocabulary.size - 4 <= 80


def test_crowded_scenes_are_scattered_single_shapes():
    plan = plan_images(SampleConfig(num_images=200, difficulty="crowded"))
    counts = Counter(len(image.scene.groups) for image in plan)
    assert set(counts) == {3, 4, 5, 6}
    for image in plan:
        assert all(group.count == 1 for group in image.scene.groups)
        assert len({cell for group in image.scene.groups for cell in group.cells}) == len(image.scene.groups)
        assert len(set(image.captions)) == 5


def test_difficulty_changes_the_scenes_not_the_layout(tmp_path):
    summary = generate_sample_dataset(str(tmp_path / "rel"), SampleConfig(num_images=24, seed=2, difficulty="relations", quirks=True))
    assert summary.num_images == 24 and summary.quirk_counts()["id_suffix"] == 5
    groups = plan_images(SampleConfig(num_images=24, seed=2))
    assert [i.image_id for i in plan_images(SampleConfig(num_images=24, seed=2, difficulty="relations"))] == [i.image_id for i in groups]
    with pytest.raises(ValueError, match="difficulty"):
        SampleConfig(difficulty="hard")
