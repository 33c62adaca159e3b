"""Fuzz the dag-pb, UnixFS and CAR decoders: random, truncated and mutated bytes
end in a value or in DecodeError (a typed BAD_REQUEST), never another exception
or a hang."""
from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webaccel.content import cid as cidmod
from webaccel.content.car import CarBlock, CarHeader, CarReader, encode_header, read_car, write_car
from webaccel.content.dag import decode as dag_decode
from webaccel.content.dag import file_pieces
from webaccel.content.errors import DecodeError, UnsupportedDagError
from webaccel.content.importer import Profile, import_bytes
from webaccel.content.pb import (
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    decode_node,
    decode_unixfs,
    encode_node,
    encode_unixfs,
    read_varint,
    varint,
)
from webaccel.errors import ErrorCode

from .conftest import REPO

FUZZ = settings(max_examples=400, deadline=1000)


def _valid_node_blocks() -> list[bytes]:
    _, blocks = import_bytes(bytes(range(256)) * 40, Profile("t", 0, False, 100, 3))
    return [b for _, b in blocks]


VALID_NODES = _valid_node_blocks()


def _decode_any(fn, data: bytes) -> None:
    try:
        fn(data)
    except DecodeError as exc:
        assert exc.code == ErrorCode.BAD_REQUEST


@FUZZ
@given(st.binary(max_size=600))
def test_dag_pb_random_bytes(data: bytes) -> None:
    _decode_any(decode_node, data)


@FUZZ
@given(st.binary(max_size=300))
def test_unixfs_random_bytes(data: bytes) -> None:
    _decode_any(decode_unixfs, data)


@FUZZ
@given(st.sampled_from(VALID_NODES), st.data())
def test_dag_pb_truncated_and_mutated(block: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(block)))
    _decode_any(decode_node, block[:cut])
    if block:
        i = data.draw(st.integers(0, len(block) - 1))
        b = data.draw(st.integers(0, 255))
        mutated = block[:i] + bytes([b]) + block[i + 1 :]

        def both(x: bytes) -> None:
            node = decode_node(x)
            if node.data is not None:
                decode_unixfs(node.data)

        _decode_any(both, mutated)


@FUZZ
@given(st.binary(max_size=400), st.booleans())
def test_dag_layer_never_crashes(data: bytes, raw: bool) -> None:
    c = cidmod.make(data, cidmod.RAW if raw else cidmod.DAG_PB, 1)
    try:
        node = dag_decode(c, data)
        if node.kind == "file":
            file_pieces(node, 0, None)
    except (DecodeError, UnsupportedDagError):
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        UnixFSData,
        st.sampled_from(list(DataType)),
        st.one_of(st.none(), st.binary(max_size=50)),
        st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        st.lists(st.integers(0, 2**64 - 1), max_size=5).map(tuple),
        st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    )
)
def test_unixfs_round_trip(d: UnixFSData) -> None:
    assert decode_unixfs(encode_unixfs(d)) == d


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), st.binary(max_size=40)),
    st.lists(
        st.builds(
            PBLink,
            st.binary(min_size=1, max_size=40),
            st.one_of(st.none(), st.text(max_size=10)),
            st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        ),
        max_size=4,
    ).map(tuple),
)
def test_dag_pb_round_trip(data: bytes | None, links: tuple[PBLink, ...]) -> None:
    node = PBNode(data, links)
    assert decode_node(encode_node(node)) == node


def test_dag_pb_strictness() -> None:
    link = encode_node(PBNode(None, (PBLink(b"\x01" * 4, "a", 1),)))
    data = encode_node(PBNode(b"\x08\x02"))
    with pytest.raises(DecodeError, match="Links after Data"):
        decode_node(data + link)
    with pytest.raises(DecodeError, match="repeated"):
        decode_node(data + data)
    with pytest.raises(DecodeError):
        decode_node(b"\x1a\x00")  # field 3 does not exist
    with pytest.raises(DecodeError, match="without Hash"):
        decode_node(b"\x12\x02\x18\x01")


@given(st.integers(0, 2**64 - 1))
def test_varint_round_trip(n: int) -> None:
    assert read_varint(varint(n), 0) == (n, len(varint(n)))


def test_varint_limits() -> None:
    with pytest.raises(DecodeError):
        read_varint(b"\xff" * 11, 0)
    with pytest.raises(DecodeError):
        read_varint(b"\xff" * 9 + b"\x7f", 0)  # > 64 bits
    with pytest.raises(DecodeError):
        read_varint(b"\x80\x00", 0)  # not minimal


def _car() -> bytes:
    root, blocks = import_bytes(bytes(range(256)) * 30, Profile("t", 1, True, 500, 4))
    return b"".join(write_car([root.cid], blocks))


VALID_CAR = _car()


def _parse(data: bytes, step: int = 97) -> list:
    return list(read_car(data[i : i + step] for i in range(0, len(data), step)))


def test_car_round_trip_any_split() -> None:
    root, blocks = import_bytes(bytes(range(256)) * 30, Profile("t", 1, True, 500, 4))
    for step in (1, 7, 100, 10_000):
        events = _parse(VALID_CAR, step)
        assert events[0] == CarHeader([root.cid])
        assert [(e.cid, e.data) for e in events[1:]] == blocks


@FUZZ
@given(st.binary(max_size=800))
def test_car_random_bytes(data: bytes) -> None:
    _decode_any(_parse, data)
    _decode_any(_parse, _header_with_raw_root(VALID_CAR[3:39]) + data)


def _header_with_raw_root(raw: bytes) -> bytes:
    """A CAR header whose root is any bytes (encode_header takes real CIDs only)."""
    link = b"\x00" + raw
    body = b"\xa2\x65roots\x81\xd8\x2a\x58" + bytes([len(link)]) + link + b"\x67version\x01"
    return varint(len(body)) + body


def test_car_header_bytes() -> None:
    """dag-cbor writes the header byte for byte as the DAG-CBOR spec asks:
    map(2) "roots" [tag 42(bytes 0x00 || cid)] "version" 1."""
    for root in (cidmod.make(b"x", cidmod.RAW, 1), cidmod.make(b"x", cidmod.DAG_PB, 0)):
        assert encode_header([root]) == _header_with_raw_root(root)
        assert _parse(encode_header([root])) == [CarHeader([root])]


@settings(max_examples=200, deadline=1000)
@given(st.data())
def test_car_truncated_and_mutated(data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(VALID_CAR) - 1))
    try:
        _parse(VALID_CAR[:cut])
        assert _ends_on_section(cut)  # only a cut between sections is a valid (shorter) CAR
    except DecodeError:
        pass
    i = data.draw(st.integers(0, len(VALID_CAR) - 1))
    b = data.draw(st.integers(0, 255))
    _decode_any(_parse, VALID_CAR[:i] + bytes([b]) + VALID_CAR[i + 1 :])


def _ends_on_section(cut: int) -> bool:
    r = CarReader()
    r.feed(VALID_CAR[:cut])
    return not r._buf and r.header is not None


def test_car_limits_and_header() -> None:
    with pytest.raises(DecodeError, match="limit"):
        CarReader().feed(varint(10**9))
    with pytest.raises(DecodeError, match="CARv2"):
        hdr = b"\xa1\x67version\x02"
        CarReader().feed(varint(len(hdr)) + hdr)
    with pytest.raises(DecodeError, match="no header"):
        CarReader().close()


def test_car_readable_by_ipld_car(tmp_path) -> None:
    """@ipld/car (the JS reference reader) reads our CAR: same root, same block count."""
    if not (REPO / "node_modules" / "@ipld" / "car").exists():
        pytest.skip("npm @ipld/car missing")
    root, blocks = import_bytes(bytes(range(256)) * 3000, "kubo-v0")
    car = tmp_path / "x.car"
    car.write_bytes(b"".join(write_car([root.cid], blocks)))
    script = (
        "import {CarReader} from '@ipld/car'; import fs from 'node:fs';"
        "const r = await CarReader.fromBytes(fs.readFileSync(process.argv[1]));"
        "let n = 0; for await (const b of r.blocks()) n++;"
        "console.log((await r.getRoots()).map(String).join(','), n)"
    )
    out = subprocess.run(["node", "--input-type=module", "-e", script, str(car)], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == [root.cid_str, str(len(blocks))]
    assert isinstance(_parse(car.read_bytes())[1], CarBlock)


@given(st.binary(max_size=70_000))
@settings(max_examples=50, deadline=None)
def test_fast_leaf_encoder_matches_generic(chunk: bytes) -> None:
    from webaccel.content.pb import encode_file_leaf

    generic = encode_node(PBNode(encode_unixfs(UnixFSData(DataType.FILE, chunk or None,
                                                          len(chunk)))))
    assert encode_file_leaf(chunk) == generic
