// node-postgres's part of the client matrix (crates/pgtrail/tests/clients.rs):
// parameterized queries (extended protocol), a named prepared statement,
// COPY in and out (pg-copy-streams), LISTEN/NOTIFY, cancel (pg's
// Client.cancel sends a CancelRequest on a new connection) and the server's
// statement_timeout. Connects with libpq's PG* variables. One canonical JSON
// line per step; statements holding `mark_node_*` are looked up in the trail.
'use strict';

const { pipeline } = require('node:stream/promises');
const { Readable, Writable } = require('node:stream');
const { Client } = require('pg');
const copyStreams = require('pg-copy-streams');

function step(name, result) {
  process.stdout.write(JSON.stringify({ step: name, result }) + '\n');
}

function failure(e) {
  return { sqlstate: e.code || null, error: e.constructor.name };
}

async function main() {
  const client = new Client();
  await client.connect();
  const q = async (text, values) => client.query(text, values);

  step('create', (await q('CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, data bytea)')).command);
  const ins = await q('INSERT INTO items AS mark_node_insert (id, name, data) VALUES ($1, $2, $3), ($4, $5, $6)',
    [1, 'one', Buffer.from([0, 255]), 2, 'two', null]);
  step('insert', [ins.command, ins.rowCount]);
  const sel = await q('SELECT id, name, data AS mark_node_select FROM items ORDER BY id');
  step('select', sel.rows.map((r) => [r.id, r.name, r.mark_node_select && r.mark_node_select.toString('hex')]));
  try {
    await q('INSERT INTO items AS mark_node_dup (id, name) VALUES ($1, $2)', [1, 'x']);
    step('duplicate', 'no error');
  } catch (e) {
    step('duplicate', failure(e));
  }

  // A named prepared statement: Parse once, then Bind/Execute.
  const named = [];
  for (const id of [1, 2, 3]) {
    const r = await client.query({ name: 'by_id', text: 'SELECT name FROM items WHERE id = $1', values: [id] });
    named.push(r.rows.map((row) => row.name));
  }
  step('prepared', named);

  // Queries issued without waiting: pg queues them on the one connection.
  const many = await Promise.all([10, 11, 12, 13].map((i) => q('INSERT INTO items (id, name) VALUES ($1, $2) RETURNING id', [i, `n${i}`])));
  step('queued', many.map((r) => r.rows[0].id));

  // COPY in and out.
  const copyIn = client.query(copyStreams.from('COPY items (id, name) FROM STDIN'));
  await pipeline(Readable.from(['100\tc100\n', '101\tc101\n', '102\tc102\n']), copyIn);
  step('copy in', copyIn.rowCount);
  try {
    const dup = client.query(copyStreams.from('COPY items (id, name) FROM STDIN'));
    await pipeline(Readable.from(['103\tc103\n100\tdup\n']), dup);
    step('copy in error', 'no error');
  } catch (e) {
    step('copy in error', failure(e));
  }
  const chunks = [];
  await pipeline(client.query(copyStreams.to('COPY (SELECT id, name FROM items WHERE id >= 100 ORDER BY id) TO STDOUT')),
    new Writable({ write(chunk, _enc, done) { chunks.push(chunk); done(); } }));
  step('copy out', Buffer.concat(chunks).toString());

  // LISTEN/NOTIFY.
  const listener = new Client();
  await listener.connect();
  const got = [];
  const arrived = new Promise((resolve) => {
    listener.on('notification', (n) => { got.push([n.channel, n.payload]); if (got.length === 2) resolve(); });
  });
  await listener.query('LISTEN matrix');
  await q("NOTIFY matrix, 'hello'");
  await q("SELECT pg_notify('matrix', 'again')");
  let timer;
  await Promise.race([arrived, new Promise((resolve) => { timer = setTimeout(resolve, 5000); })]);
  clearTimeout(timer);
  step('notifications', got);
  await listener.end();

  // Cancel: a CancelRequest for this backend, sent on a new connection.
  // Again until it stops: a cancel before the statement started is a no-op.
  // Client.cancel connects the (unconnected) client it is called on.
  const sleeping = q('SELECT pg_sleep(20)');
  const sleep = client.activeQuery;
  const canceller = setInterval(() => new Client().cancel(client, sleep), 200);
  try {
    await sleeping;
    step('cancel', 'not cancelled');
  } catch (e) {
    step('cancel', failure(e));
  }
  clearInterval(canceller);
  // The server's own timeout.
  await q("SET statement_timeout = '200ms'");
  try {
    await q('SELECT pg_sleep(20)');
    step('statement_timeout', 'not cancelled');
  } catch (e) {
    step('statement_timeout', failure(e));
  }
  await q('RESET statement_timeout');

  await q('BEGIN');
  await q('DELETE FROM items WHERE id = 1');
  try {
    await q('SELECT 1 / $1::int', [0]);
  } catch (e) {
    step('transaction error', failure(e));
  }
  await q('ROLLBACK');
  const fin = await q('SELECT count(*)::int AS n, sum(id)::int AS s FROM items');
  step('final', [fin.rows[0].n, fin.rows[0].s]);
  await client.end();
}

main().catch((e) => {
  step('crashed', String(e && e.stack));
  process.exitCode = 1;
});
