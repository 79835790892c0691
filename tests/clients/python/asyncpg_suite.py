"""asyncpg's part of the client matrix: prepared statements (binary
everywhere), a cursor fetching a portal a few rows at a time (Execute with a
row limit), COPY in and out, executemany (pipelined), notifications, cancel
on timeout. Connects with libpq's PG* variables. Statements holding
`mark_asyncpg_*` are looked up in the trail."""

import asyncio
import io

import asyncpg

from common import error, step


async def main():
    conn = await asyncpg.connect()
    step("create", await conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, data bytea)"))
    step(
        "insert",
        await conn.execute(
            "INSERT INTO items AS mark_asyncpg_insert (id, name, data) VALUES ($1, $2, $3), ($4, $5, $6)",
            1, "one", b"\x00\xff", 2, "two", None,
        ),
    )
    rows = await conn.fetch("SELECT id, name, data AS mark_asyncpg_select FROM items ORDER BY id")
    step("select", [[r["id"], r["name"], r["mark_asyncpg_select"] and r["mark_asyncpg_select"].hex()] for r in rows])
    try:
        await conn.execute("INSERT INTO items AS mark_asyncpg_dup (id, name) VALUES ($1, $2)", 1, "x")
        step("duplicate", "no error")
    except asyncpg.UniqueViolationError as e:
        step("duplicate", error(e))

    # A named prepared statement, run several times.
    # fetchval runs the portal with a row limit of 1: PortalSuspended, then
    # Sync closes it.
    stmt = await conn.prepare("SELECT name AS mark_asyncpg_fetchval FROM items WHERE id = $1")
    step("prepared", [await stmt.fetchval(1), await stmt.fetchval(2)])

    # executemany: one Parse, then Bind/Execute per row, pipelined.
    await conn.executemany("INSERT INTO items (id, name) VALUES ($1, $2)", [(i, f"n{i}") for i in range(10, 40)])
    step("executemany", await conn.fetchval("SELECT count(*) FROM items"))
    try:
        await conn.executemany("INSERT INTO items (id, name) VALUES ($1, $2)", [(50, "a"), (10, "dup"), (51, "b")])
        step("executemany error", "no error")
    except asyncpg.UniqueViolationError as e:
        step("executemany error", error(e))
    step("after executemany error", await conn.fetchval("SELECT count(*) FROM items WHERE id >= 50"))

    # A cursor: the portal runs 4 rows at a time (PortalSuspended between).
    async with conn.transaction():
        query = "SELECT id AS mark_asyncpg_cursor FROM items WHERE id >= 10 ORDER BY id"
        fetched = [r[0] async for r in conn.cursor(query, prefetch=4)]
        cur = await conn.cursor("SELECT id FROM items ORDER BY id")
        first = await cur.fetch(3)
        await cur.forward(5)
        later = await cur.fetchrow()
    step("cursor", [fetched, [r["id"] for r in first], later["id"]])

    # COPY in (binary, asyncpg's format) and out.
    step("copy in", await conn.copy_records_to_table("items", records=[(i, f"c{i}", None) for i in range(100, 110)]))
    out = io.BytesIO()
    step("copy out", await conn.copy_from_query("SELECT id, name FROM items WHERE id >= 100 ORDER BY id", output=out))
    step("copy out data", out.getvalue().decode())
    try:
        await conn.copy_records_to_table("items", records=[(100, "dup", None)])
        step("copy in error", "no error")
    except asyncpg.UniqueViolationError as e:
        step("copy in error", error(e))

    # Notifications.
    listener = await asyncpg.connect()
    got = asyncio.Queue()
    await listener.add_listener("matrix", lambda _c, _pid, channel, payload: got.put_nowait([channel, payload]))
    await conn.execute("NOTIFY matrix, 'hello'")
    await conn.execute("SELECT pg_notify('matrix', 'again')")
    step("notifications", [await asyncio.wait_for(got.get(), 5), await asyncio.wait_for(got.get(), 5)])
    await listener.close()

    # A timeout cancels the statement on the server (CancelRequest).
    try:
        await conn.execute("SELECT pg_sleep(20)", timeout=0.3)
        step("cancel", "not cancelled")
    except asyncio.TimeoutError as e:
        step("cancel", type(e).__name__)
    step("after cancel", await conn.fetchval("SELECT count(*) FROM items"))

    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM items WHERE id = 1")
            await conn.execute("SELECT 1 / 0")
    except asyncpg.DivisionByZeroError as e:
        step("transaction error", error(e))
    step("final", list(await conn.fetchrow("SELECT count(*), sum(id) FROM items")))
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
