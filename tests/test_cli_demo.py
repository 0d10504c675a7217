"""gossip demo's measurements: what a node scores alone on label-skewed and on iid shares."""

from __future__ import annotations

from cli.demo_cmd import Scorer


def test_alone_a_node_with_a_few_classes_scores_low_and_with_an_iid_share_high(digits):
    scorer = Scorer(digits)
    skewed = scorer.alone(8, "labels")
    iid = scorer.alone(8, "iid")
    assert len(skewed) == len(iid) == 8
    assert max(skewed) < 0.4  # a few classes of ten: the demo's point is that gossip lifts this
    assert min(iid) > 0.85  # an iid share already knows every class
