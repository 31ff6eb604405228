"""The header-block cache of ``grpcwire.headers`` decodes exactly as a plain HPACK decoder.

Sequences of header lists from a small vocabulary (so blocks repeat, fields get indexed,
the dynamic table fills and evicts) go through one ``hpack.Encoder``; every block is
decoded by ``HeaderDecoder`` and by a fresh-state ``hpack.Decoder`` fed the same blocks.
"""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings, strategies as st

from kubeinfer.runtime.server.grpcwire.frames import ProtocolError
from kubeinfer.runtime.server.grpcwire.headers import HeaderDecoder

FIELDS = [
    (":method", "POST"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
    (":path", "/inference.GRPCInferenceService/ModelReady"), ("content-type", "application/grpc"),
    ("te", "trailers"), ("grpc-timeout", "200m"), ("grpc-timeout", "1S"), ("x-a", "1" * 900),
    ("x-b", "2" * 900), ("x-c", "3" * 900), ("user-agent", "grpc-c++/1.62"),
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=6), min_size=1, max_size=30),
    st.lists(st.sampled_from([None, 256, 4096]), min_size=30, max_size=30),
)
def test_cached_decoding_equals_plain_decoding(header_lists, table_sizes):
    encoder, plain, cached = hpack.Encoder(), hpack.Decoder(), HeaderDecoder(1 << 20)
    for headers, size in zip(header_lists, table_sizes):
        if size is not None:
            encoder.header_table_size = size  # the next block starts with a size update
        block = encoder.encode(headers)
        expected = [(n.encode() if isinstance(n, str) else n, v.encode() if isinstance(v, str) else v)
                    for n, v in plain.decode(block, raw=True)]
        assert cached.decode(block) == expected


def test_a_repeated_block_is_served_from_the_cache():
    encoder, decoder, plain = hpack.Encoder(), HeaderDecoder(1 << 20), hpack.Decoder()
    block = encoder.encode(FIELDS[:5])
    decoder.decode(block)
    plain.decode(block)
    repeated = encoder.encode(FIELDS[:5])  # all indexed now
    first = decoder.decode(repeated)
    assert decoder.decode(repeated) is first  # the same list: no decoding
    inserting = encoder.encode([("x-new", "v")])
    decoder.decode(inserting)  # changes the table: the same bytes now mean other fields
    plain.decode(repeated)
    plain.decode(repeated)
    plain.decode(inserting)
    now = decoder.decode(repeated)
    assert now != first
    assert now == [(n.encode(), v.encode()) for n, v in plain.decode(repeated)]


def test_bad_blocks_and_oversized_lists_are_compression_errors():
    with pytest.raises(ProtocolError):
        HeaderDecoder(1 << 20).decode(b"\xff\xff\xff\xff")  # an index far past the table
    with pytest.raises(ProtocolError):
        HeaderDecoder(100).decode(hpack.Encoder().encode([("x", "y" * 200)]))
