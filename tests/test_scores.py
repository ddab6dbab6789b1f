"""CCS, levels, CCS@K, majority vote, labels and kappas against hand computations and textbook values."""

import pytest

from ccs_ray import scores


def test_ccs_counts_aligned_and_is_none_when_incomplete():
    assert scores.ccs([1, 0, 1, 1, 0]) == 3
    assert scores.ccs([1, 1, 1, 1, 1]) == 5
    assert scores.ccs([1, None, 1, 1, 1]) is None
    assert scores.ccs([1, 1, 1, 1]) is None  # fewer than m spans
    assert scores.ccs([1, 0, 1], m=3) == 2
    with pytest.raises(ValueError, match="0 or 1"):
        scores.ccs([1, 2, 0, 0, 0])


@pytest.mark.parametrize("score,expected", [(5, "high"), (4, "medium"), (2, "medium"), (1, "low"), (0, "low"),
                                            (None, "unscored")])
def test_levels(score, expected):
    assert scores.level(score) == expected


def test_level_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside 0..5"):
        scores.level(6)


def test_ccs_at_k_divides_by_every_head_and_counts_unscored():
    at = scores.ccs_at_k([5, 5, 1, None, 3])
    assert at == {0: 0.0, 1: 0.2, 2: 0.0, 3: 0.2, 4: 0.0, 5: 0.4, "unscored": 0.2}
    assert sum(at.values()) == pytest.approx(1.0)
    assert scores.ccs_at_k([None]) == {**{k: 0.0 for k in range(6)}, "unscored": 1.0}
    assert scores.ccs_at_k([]) == {**{k: 0.0 for k in range(6)}, "unscored": 0.0}


def test_majority_vote():
    assert scores.majority_vote([1, 1, 0]) == 1
    assert scores.majority_vote([1, 0]) == 0  # a tie is not a majority
    assert scores.majority_vote([1, None, None]) == 1
    assert scores.majority_vote([None, None]) is None


def test_labels_normalised_and_most_common():
    assert scores.normalize_label(" Colors. ") == "color"
    assert scores.normalize_label("Glass") == "glass"
    assert scores.normalize_label("!!") is None
    assert scores.most_common_label(["Animals", "animal", "location", None]) == "animal"
    assert scores.most_common_label(["b", "a"]) == "a"  # tie -> alphabetical


def test_cohen_kappa_textbook():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 0.7, p_e = 0.5, kappa = 0.4.
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert scores.cohen_kappa(a, b) == pytest.approx(0.4)
    assert scores.cohen_kappa(a, a) == 1.0
    assert scores.cohen_kappa([1, None, 0], [1, 1, None]) == 1.0  # only the first item counts, p_e = 1
    assert scores.cohen_kappa([None], [1]) is None
    with pytest.raises(ValueError, match="different numbers"):
        scores.cohen_kappa([1], [1, 0])


def test_fleiss_kappa_textbook():
    # Fleiss (1971) worked example (10 items, 14 raters, 5 categories): kappa = 0.210.
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = [[c for c, k in enumerate(row) for _ in range(k)] for row in counts]
    assert scores.fleiss_kappa(ratings) == pytest.approx(0.2099, abs=5e-4)


def test_fleiss_with_two_raters_is_scotts_pi():
    a = [1, 1, 0, 1, 0, 0, 1, 1]
    b = [1, 0, 0, 1, 1, 0, 1, 1]
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    p1 = (sum(a) + sum(b)) / (2 * len(a))
    pi = (p_o - (p1 ** 2 + (1 - p1) ** 2)) / (1 - (p1 ** 2 + (1 - p1) ** 2))
    assert scores.fleiss_kappa(list(zip(a, b, strict=True))) == pytest.approx(pi)
    assert scores.fleiss_kappa([(1, None), (1, 1)]) == 1.0  # the item with a missing vote is dropped
    with pytest.raises(ValueError, match="at least 2 raters"):
        scores.fleiss_kappa([(1,), (0,)])


def test_label_normalisation_and_levels_have_one_definition():
    from ccs_ray import ablate

    assert ablate.normalize_label is scores.normalize_label and ablate.level is scores.level
    assert scores.normalize_label("Colours!") == "colour" and scores.normalize_label("Art  Styles") == "art style"
    assert scores.normalize_label("3D renders") == "3d render" and scores.normalize_label(None) is None


@pytest.mark.parametrize("score,m,expected", [(10, 10, "high"), (9, 10, "medium"), (2, 10, "medium"), (1, 10, "low"),
                                              (5, 10, "medium"), (3, 3, "high"), (1, 3, "low")])
def test_levels_follow_m(score, m, expected):
    assert scores.level(score, m) == expected
