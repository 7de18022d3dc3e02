"""The Redis bus's buffered RESP2 parser gives exactly what redis-py's own parser gives.

No server: both parsers read the same bytes from an asyncio StreamReader, fed in chunks that split
replies at every kind of boundary (inside a length line, inside a bulk string, between pipeline replies).
"""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import pytest
from redis import exceptions as rex
from redis._parsers import _AsyncRESP2Parser
from redis._parsers.encoders import Encoder

from l2_tactical.bus.redis_streams import BufferedRESP2Parser

PAYLOAD = b'{"order_id": "ord-1", "price": 105000.5, "symbol": "BTCUSDT", "reasoning": "caf\xc3\xa9 \\r\\n"}'
ENTRY = (b"*2\r\n$15\r\n1700000000000-0\r\n*8\r\n$4\r\ntype\r\n$11\r\nOrderIntent\r\n$7\r\npayload\r\n$"
         + str(len(PAYLOAD)).encode() + b"\r\n" + PAYLOAD + b"\r\n$14\r\ncorrelation_id\r\n$1\r\nx\r\n"
         b"$12\r\npublished_at\r\n$25\r\n2025-06-01T00:01:00+00:00\r\n")
REPLIES = [
    b"+OK\r\n",
    b":42\r\n",
    b":-7\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"$0\r\n\r\n",
    b"$5\r\na\r\nbc\r\n",                                       # CRLF inside a bulk string
    b"*0\r\n",
    b"-ERR unknown command 'FOO'\r\n",
    b"-NOGROUP No such key 'x' or consumer group 'g'\r\n",
    b"*1\r\n*2\r\n$11\r\ntest:orders\r\n*3\r\n" + ENTRY * 3,   # an XREADGROUP reply with three entries
    b"*3\r\n$3\r\nabc\r\n:1\r\n-WRONGTYPE Operation against a key\r\n",  # an error inside an array
]


def _connection(data: bytes, cuts: list[int], decode: bool) -> Any:
    reader = asyncio.StreamReader()
    start = 0
    for cut in [*cuts, len(data)]:
        reader.feed_data(data[start:cut])
        start = cut
    reader.feed_eof()
    return SimpleNamespace(_reader=reader, encoder=Encoder("utf-8", "strict", decode))


def _plain(value: Any) -> Any:
    """Comparable form: exceptions by class and message."""
    if isinstance(value, BaseException):
        return (type(value).__name__, str(value))
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def _read_all(parser_class: type, data: bytes, cuts: list[int], n: int, decode: bool) -> list[Any]:
    parser = parser_class(socket_read_size=7)   # tiny reads: replies arrive in many pieces
    parser.on_connect(_connection(data, cuts, decode))
    out = []
    for _ in range(n):
        try:
            out.append(_plain(await parser.read_response()))
        except rex.RedisError as exc:
            out.append(("raised", type(exc).__name__, str(exc)))
    return out


@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("seed", range(25))
def test_buffered_parser_reads_what_redis_py_reads_however_the_bytes_are_split(seed: int, decode: bool) -> None:
    rng = random.Random(seed)
    replies = [rng.choice(REPLIES) for _ in range(12)]
    data = b"".join(replies)
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 40))))
    got = asyncio.run(_read_all(BufferedRESP2Parser, data, cuts, len(replies), decode))
    want = asyncio.run(_read_all(_AsyncRESP2Parser, data, cuts, len(replies), decode))
    assert got == want
    assert ("ResponseError", "unknown command 'FOO'") in got or b"-ERR" not in data


def test_buffered_parser_raises_connection_error_when_the_server_closes_mid_reply() -> None:
    data = REPLIES[10][:-20]                     # the stream ends inside the reply

    async def read() -> Any:
        parser = BufferedRESP2Parser(socket_read_size=64)
        parser.on_connect(_connection(data, [], False))
        return await parser.read_response()

    with pytest.raises(rex.ConnectionError, match="Connection closed by server"):
        asyncio.run(read())


def test_buffered_parser_raises_a_loading_error_instead_of_returning_it() -> None:
    async def read() -> Any:
        parser = BufferedRESP2Parser(socket_read_size=64)
        parser.on_connect(_connection(b"-LOADING Redis is loading the dataset in memory\r\n", [], False))
        return await parser.read_response()

    with pytest.raises(rex.BusyLoadingError):
        asyncio.run(read())
