"""Grouped labeled splits (sslhub.splits): groups never straddle the sides, stratified where possible."""

from __future__ import annotations

import random

import pytest

from sslhub import (
    GroupSplit,
    group_split,
    groups_from_paths,
    path_group_problems,
    split_by_path_groups,
    split_problem,
    unmatched_paths_problem,
)


def _random_problem(rng: random.Random) -> tuple[list[int], list[str], float]:
    """Labels and groups of a random shape: few or many groups, one or many classes per group."""
    num_groups = rng.randint(1, 30)
    num_classes = rng.randint(1, 6)
    labels, groups = [], []
    for group in range(num_groups):
        classes_here = rng.sample(range(num_classes), rng.randint(1, num_classes))
        for _ in range(rng.randint(1, 12)):
            labels.append(rng.choice(classes_here))
            groups.append(f"g{group}")
    order = list(range(len(labels)))
    rng.shuffle(order)
    return [labels[i] for i in order], [groups[i] for i in order], rng.uniform(0.05, 0.95)


@pytest.mark.parametrize("case", range(300))
def test_grouped_splits_never_share_a_group_and_cover_every_sample_once(case):
    rng = random.Random(case)
    labels, groups, fraction = _random_problem(rng)
    split = group_split(labels, groups, fraction, seed=case)
    train_groups = {groups[i] for i in split.train}
    test_groups = {groups[i] for i in split.test}
    assert not train_groups & test_groups
    assert sorted(split.train + split.test) == list(range(len(labels)))
    assert (split.train_groups, split.test_groups) == (len(train_groups), len(test_groups))
    if len(set(groups)) >= 2:
        assert split.train and split.test
    # Deterministic, and independent of the order samples were listed in.
    assert group_split(labels, groups, fraction, seed=case) == split


def test_the_split_does_not_depend_on_the_order_of_the_samples():
    labels = [i % 3 for i in range(60)]
    groups = [f"speaker{i % 10}" for i in range(60)]
    split = group_split(labels, groups, 0.3, seed=4)
    order = list(range(60))
    random.Random(1).shuffle(order)
    shuffled = group_split([labels[i] for i in order], [groups[i] for i in order], 0.3, seed=4)
    test_groups = {groups[order[i]] for i in shuffled.test}
    assert test_groups == {groups[i] for i in split.test}


def test_one_class_per_group_is_stratified_by_groups():
    # 4 documents per topic, 3 topics: a 25% test side takes one document of each topic.
    labels = [topic for topic in range(3) for _ in range(4) for _ in range(5)]
    groups = [f"doc{topic}-{d}" for topic in range(3) for d in range(4) for _ in range(5)]
    split = group_split(labels, groups, 0.25, seed=0)
    assert sorted(labels[i] for i in split.test) == [0] * 5 + [1] * 5 + [2] * 5
    assert split.group_counts() == {"train": 9, "test": 3}


def test_without_groups_the_split_is_stratified_per_sample():
    labels = [0] * 50 + [1] * 30 + [2] * 20
    split = group_split(labels, None, 0.2, seed=3)
    counts = [sum(labels[i] == c for i in split.test) for c in range(3)]
    assert counts == [10, 6, 4]
    assert split.group_counts() == {"train": 80, "test": 20}


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1, got 1.0"):
        group_split([0, 1], ["a", "b"], 1.0, 0)
    with pytest.raises(ValueError, match="3 groups for 2 labels"):
        group_split([0, 1], ["a", "b", "c"], 0.5, 0)


def test_groups_from_paths_named_group_first_group_or_whole_match():
    paths = ["yes/spk07_take2.wav", "no/spk12_take1.wav", "no/other.wav"]
    assert groups_from_paths(paths, r"spk(?P<group>\d+)_take(\d)") == ["07", "12", None]
    assert groups_from_paths(paths, r"_take(\d)") == ["2", "1", None]
    assert groups_from_paths(paths, r"spk\d+") == ["spk07", "spk12", None]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        groups_from_paths(paths, "spk(")


def test_problem_messages_name_the_pattern_the_files_and_the_class():
    paths = ["a/x1.png", "b/x2.png"]
    assert unmatched_paths_problem(paths, [None, None], "zz", "imgs") == (
        "pattern 'zz' matches none of the 2 files under imgs (e.g. 'a/x1.png')"
    )
    assert unmatched_paths_problem(paths, ["1", None], "x1", "imgs") == (
        "pattern 'x1' matches 1 of the 2 files under imgs; every file needs a group (no match: 'b/x2.png')"
    )
    lonely = GroupSplit(train=[0], test=[1], train_groups=1, test_groups=1)
    assert split_problem([0, 1], lonely, ["cat", "dog"]) == (
        "the grouped split leaves class 'dog' with no probe-train samples (all its groups went to the test side); "
        "add groups of that class, lower the test fraction or change the split seed"
    )


def test_split_by_path_groups_refuses_unlabeled_sources():
    with pytest.raises(ValueError, match="grouping splits the labeled samples, but imgs has no labels"):
        split_by_path_groups(["x1.png", "x2.png"], None, [], r"x(\d)", "imgs", 0.5, 0)


def test_path_group_problems_reports_at_the_pattern_field():
    paths = [f"{c}/spk{g}_{i}.wav" for c in ("no", "yes") for g in range(4) for i in range(2)]
    labels = [0] * 8 + [1] * 8
    assert path_group_problems(paths, labels, ["no", "yes"], r"spk(\d)", "clips", 0.25, 0) == []
    problems = path_group_problems([*paths, "yes/odd.wav"], [*labels, 1], ["no", "yes"], r"spk(\d)", "clips", 0.25, 0)
    assert problems == [
        (
            ("group_pattern",),
            "pattern 'spk(\\d)' matches 16 of the 17 files under clips; every file needs a group "
            "(no match: 'yes/odd.wav')",
        )
    ]
    unlabeled = path_group_problems(["a1.png"], None, [], r"a(\d)", "imgs", 0.5, 0, field="pattern")
    assert [where for where, _ in unlabeled] == [("pattern",)]


def test_split_problem_names_classes_with_fewer_probe_train_samples_than_the_largest_k():
    labels = [0] * 10 + [1] * 30
    split = group_split(labels, None, 0.5, seed=0)
    assert split_problem(labels, split, ["few", "many"], min_train_per_class=5) is None
    message = split_problem(labels, split, ["few", "many"], min_train_per_class=10)
    assert message == (
        "the split leaves class 'few' with 5 probe-train sample(s), fewer than the largest few-shot k (10); lower "
        "evaluate.few_shot.shots, add samples or groups of that class, or lower the test fraction"
    )
