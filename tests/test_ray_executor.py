"""The Ray executor's refusals. Ray itself runs in test_frontier_cross: the frontier's DeepReDuce
jobs on a local Ray instance train the networks the sequential executor trains, and skip the
finished ones."""

import pytest

pytestmark = pytest.mark.ray


def test_an_unreachable_address_fails_fast_with_a_fix():
    from relucut import RelucutError
    from relucut.executors import _check_reachable, make_executor

    with pytest.raises(RelucutError, match="cannot reach a Ray cluster at 127.0.0.1:1"):
        _check_reachable("127.0.0.1:1", timeout_s=2)
    with pytest.raises(RelucutError, match="not host:port"):
        _check_reachable("nowhere")
    with pytest.raises(RelucutError, match="--address is for --executor ray"):
        make_executor("sequential", address="127.0.0.1:6379")
