"""dualrec.explain: reasons in words, never evidence that is not there."""

from dualrec.explain import PATH_REASONS, _feature_reason


def test_an_absent_feature_is_no_reason():
    row = {"path_cp2": 0.0, "path_sim": 2.0, "text_cos": 0.1}
    assert _feature_reason("path_cp2", 0.0, row) is None  # a path that is not there explains nothing
    assert _feature_reason("path_sim", 2.0, row) == PATH_REASONS["sim"]
    assert _feature_reason("graph_score", 1.0, row) == PATH_REASONS["sim"]  # the path kind that carries it
    assert _feature_reason("text_cos", 0.1, row) is None and "0.80" in _feature_reason("text_cos", 0.8, row)
    assert _feature_reason("log_in_v", 0.0, row) is None and _feature_reason("log_in_u", 3.0, row) is None
