"""ContentConfig builds the store's network tier; the store sees it only as a protocol."""

from __future__ import annotations

from webaccel.content.config import ContentConfig
from webaccel.content.store import BlockSource, DagSource


def test_peer_network_is_a_dag_source_only_with_peers() -> None:
    assert ContentConfig().peer_network() is None
    net = ContentConfig(peers=["http://127.0.0.1:9"]).peer_network()
    assert isinstance(net, DagSource)


def test_a_plain_block_source_is_not_a_dag_source() -> None:
    class OneBlock:
        async def get_block(self, c: bytes) -> bytes:
            return b""

    src: BlockSource = OneBlock()
    assert not isinstance(src, DagSource)
