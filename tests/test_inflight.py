"""appliances.inflight: cut-through of a pull in flight (pure asyncio, no sockets)."""
import asyncio

import pytest

from appliances.inflight import HOLDBACK_BYTES, Inflight


async def _collect(inf: Inflight, out: list) -> None:
    async for part in inf.chunks():
        out.append(part)


def test_readers_get_bytes_as_they_arrive_but_the_tail_only_after_verification():
    async def main():
        size = HOLDBACK_BYTES + 1000
        inf, got = Inflight(size), []
        reader = asyncio.create_task(_collect(inf, got))
        inf.append(b"a" * 600)
        await asyncio.sleep(0)
        assert b"".join(got) == b"a" * 600  # cut-through: the first bytes went out at once
        inf.append(b"b" * (size - 600))
        await asyncio.sleep(0)
        assert len(b"".join(got)) == size - HOLDBACK_BYTES  # the tail waits for finish(ok)
        late = []  # a request joining now gets everything from the start
        joiner = asyncio.create_task(_collect(inf, late))
        await asyncio.sleep(0)
        inf.finish(ok=True)
        await asyncio.gather(reader, joiner)
        assert b"".join(got) == b"".join(late) == b"a" * 600 + b"b" * (size - 600)
    asyncio.run(main())


def test_a_failed_pull_cuts_every_reader_short():
    async def main():
        inf, got = Inflight(HOLDBACK_BYTES * 3), []
        reader = asyncio.create_task(_collect(inf, got))
        inf.append(b"x" * HOLDBACK_BYTES * 3)  # all bytes arrived, but they did not verify
        await asyncio.sleep(0)
        inf.finish(ok=False)
        with pytest.raises(EOFError, match="upstream pull failed"):
            await reader
        assert len(b"".join(got)) == HOLDBACK_BYTES * 2  # never the complete body
        # finish(ok=True) with a short buffer is a failure too
        short = Inflight(10)
        short.append(b"12345")
        short.finish(ok=True)
        with pytest.raises(EOFError):
            await _collect(short, [])
    asyncio.run(main())


def test_small_objects_and_validation():
    async def main():
        inf, got = Inflight(5), []  # smaller than the hold-back: nothing before verification
        reader = asyncio.create_task(_collect(inf, got))
        inf.append(b"hello")
        await asyncio.sleep(0)
        assert got == []
        inf.finish(ok=True)
        await reader
        assert got == [b"hello"]
        with pytest.raises(RuntimeError):
            inf.append(b"more")
        empty = []
        await _collect(Inflight(0), empty)
        assert empty == []
    asyncio.run(main())
    with pytest.raises(ValueError):
        Inflight(-1)
