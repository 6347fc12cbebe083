"""The mailbox a call's callbacks hand work to its tasks through: order, bound, close."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest

from acdg_asgi.runtime.mailbox import Mailbox

pytestmark = pytest.mark.anyio


async def test_the_reader_gets_every_item_in_order_then_ends_once_closed() -> None:
    box = Mailbox[int](asyncio.get_running_loop())
    got: list[int] = []

    async def read() -> None:
        async for item in box:
            got.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.lowlevel.checkpoint()  # the reader waits
        for i in range(3):
            assert box.put(i)
        box.close()  # what was put before the close is still read
        assert not box.put(3)
    assert got == [0, 1, 2]


async def test_a_full_mailbox_refuses_items_until_the_reader_takes_one() -> None:
    box = Mailbox[str](asyncio.get_running_loop(), limit=2)
    assert box.put("a") and box.put("b")
    assert not box.put("c")
    assert len(box) == 2
    assert await box.__anext__() == "a"
    assert box.put("c")
    assert [await box.__anext__(), await box.__anext__()] == ["b", "c"]


async def test_the_reader_yields_to_others_between_items() -> None:
    box = Mailbox[int](asyncio.get_running_loop())
    order: list[str] = []

    async def read() -> None:
        async for _ in box:
            order.append("item")

    async def other() -> None:
        for _ in range(3):
            order.append("other")
            await anyio.lowlevel.checkpoint()

    for i in range(3):
        box.put(i)
    box.close()
    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        tg.start_soon(other)
    assert order.count("item") == 3
    assert order != ["item", "item", "item", "other", "other", "other"]


async def test_once_its_reader_is_gone_the_mailbox_takes_nothing() -> None:
    box = Mailbox[int](asyncio.get_running_loop())
    box.put(1)
    with anyio.move_on_after(0.01):
        async with box:
            async for _ in box:
                pass  # waits for more, until cancelled
    assert box.closed and len(box) == 0
    assert not box.put(2)
