"""psycopg 3's part of the client matrix: pipeline mode (with an error in
the middle), COPY in and out, binary parameters and results, server-side
prepared statements, notifications, cancel. Connects with libpq's PG*
variables. Statements holding `mark_psycopg_*` are looked up in the trail."""

import logging
import threading
import time

import psycopg
from psycopg import errors

from common import error, step


def main():
    # psycopg warns ("error ignored terminating <Pipeline>") when a pipeline
    # ends on an error, or not, depending on how the results arrived: a
    # timing, not a result.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    conn = psycopg.connect(autocommit=True)
    cur = conn.cursor()
    cur.execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, data bytea)"
    )
    step("create", cur.statusmessage)

    # Binary parameters (%b) and binary results.
    cur.execute(
        "INSERT INTO items AS mark_psycopg_insert (id, name, data) VALUES (%b, %b, %b), (%b, %b, %b)",
        (1, "one", b"\x00\x01\xff", 2, "two", b""),
    )
    step("insert binary", [cur.statusmessage, cur.rowcount])
    cur.execute(
        "SELECT id, name, data AS mark_psycopg_select FROM items ORDER BY id",
        binary=True,
    )
    step("select binary", [[r[0], r[1], bytes(r[2]).hex()] for r in cur.fetchall()])

    # A unique violation.
    try:
        cur.execute(
            "INSERT INTO items AS mark_psycopg_dup (id, name) VALUES (%s, %s)", (1, "x")
        )
        step("duplicate", "no error")
    except errors.UniqueViolation as e:
        step("duplicate", error(e))

    # Server-side prepared statement (Parse once, then Bind/Execute).
    for i in range(3, 8):
        cur.execute(
            "INSERT INTO items (id, name) VALUES (%s, %s)", (i, f"n{i}"), prepare=True
        )
    cur.execute("SELECT count(*) FROM items", prepare=True)
    step("prepared", cur.fetchone()[0])

    # Pipeline mode: several statements, one Sync; then an error mid-way
    # (the server skips to Sync: what follows the error does not run).
    # A SET in the middle: its ParameterStatus arrives between results.
    # p.sync() ends a batch with a Sync inside the pipeline.
    with conn.pipeline() as p:
        c1 = conn.execute("UPDATE items SET name = upper(name) WHERE id <= 2")
        conn.execute("SET application_name = 'matrix-pipeline'")
        c2 = conn.execute("SELECT name FROM items WHERE id = %s", (1,))
        p.sync()
        conn.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (100, "hundred"))
        c3 = conn.execute("SHOW application_name")
    step("pipeline", [c1.rowcount, c2.fetchone()[0], c3.fetchone()[0]])
    try:
        with conn.pipeline():
            conn.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (101, "a"))
            conn.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (101, "b"))
            conn.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (102, "c"))
        step("pipeline error", "no error")
    except errors.UniqueViolation as e:
        step("pipeline error", error(e))
    cur = conn.cursor()
    cur.execute("SELECT id FROM items WHERE id > 100 ORDER BY id")
    step("after pipeline error", [r[0] for r in cur.fetchall()])
    with conn.pipeline():
        cur.executemany(
            "INSERT INTO items (id, name) VALUES (%s, %s)",
            [(200 + i, f"many {i}") for i in range(5)],
        )
    step("executemany in pipeline", cur.rowcount)

    # COPY in (text and binary) and out.
    with cur.copy("COPY items (id, name) FROM STDIN") as copy:
        for i in range(300, 310):
            copy.write_row((i, f"copied {i}"))
    step("copy in", [cur.statusmessage, cur.rowcount])
    with cur.copy("COPY items (id, name, data) FROM STDIN (FORMAT binary)") as copy:
        copy.set_types(["int4", "text", "bytea"])
        copy.write_row((400, "binary", b"\xde\xad"))
    step("copy in binary", cur.rowcount)
    try:
        with cur.copy("COPY items (id, name) FROM STDIN") as copy:
            copy.write_row((300, "duplicate"))
        step("copy in error", "no error")
    except errors.UniqueViolation as e:
        step("copy in error", error(e))
    rows = []
    with cur.copy("COPY (SELECT id, name FROM items WHERE id >= 300 ORDER BY id) TO STDOUT") as copy:
        for row in copy.rows():
            rows.append(list(row))
    step("copy out", rows)

    # Notifications between results.
    listener = psycopg.connect(autocommit=True)
    got = []
    listener.add_notify_handler(lambda n: got.append([n.channel, n.payload]))
    listener.execute("LISTEN matrix")
    conn.execute("SELECT pg_notify('matrix', 'hello')")
    conn.execute("NOTIFY matrix, 'again'")
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        listener.execute("SELECT 1")
        time.sleep(0.02)
    step("notifications", got)
    listener.close()

    # Cancel a running statement from another thread (CancelRequest),
    # again until it stops: a cancel that arrives before the statement
    # started is a no-op on the server.
    finished = threading.Event()

    def cancel_until_finished():
        while not finished.wait(0.2):
            conn.cancel()

    canceller = threading.Thread(target=cancel_until_finished)
    canceller.start()
    try:
        conn.execute("SELECT pg_sleep(20)")
        step("cancel", "not cancelled")
    except errors.QueryCanceled as e:
        step("cancel", error(e))
    finished.set()
    canceller.join()
    step("after cancel", conn.execute("SELECT count(*) FROM items").fetchone()[0])

    # A transaction with an error, then rollback.
    conn.autocommit = False
    try:
        conn.execute("DELETE FROM items WHERE id = 1")
        conn.execute("SELECT 1 / 0")
    except errors.DivisionByZero as e:
        step("transaction error", error(e))
        conn.rollback()
    conn.autocommit = True
    step("final", conn.execute("SELECT count(*), sum(id) FROM items").fetchone())
    conn.close()


if __name__ == "__main__":
    main()
