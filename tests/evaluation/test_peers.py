import numpy as np
import pytest

from rvmatte.errors import InputError
from rvmatte.evaluation.peers import PEERS, Peer, available_peers

from .conftest import PEERS_DIR


def test_all_three_peers_are_in_the_repo():
    assert available_peers(PEERS_DIR) == list(PEERS)


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_output_is_a_probability_at_frame_size(name):
    frame = (np.random.default_rng(0).random((45, 70, 3)) * 255).astype(np.uint8)
    for order in ("rgb", "bgr"):
        p = Peer(name, PEERS_DIR, channel_order=order)(frame)
        assert p.shape == (45, 70) and p.dtype == np.float32
        assert 0 <= p.min() and p.max() <= 1


def test_peer_errors(tmp_path):
    with pytest.raises(InputError, match="unknown peer"):
        Peer("nope", PEERS_DIR)
    with pytest.raises(InputError, match="not found"):
        Peer("sinet", tmp_path)
    with pytest.raises(ValueError):
        Peer("sinet", PEERS_DIR)(np.zeros((4, 4), np.uint8))
