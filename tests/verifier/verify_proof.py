#!/usr/bin/env python3
"""An independent verifier of pgtrail proof files, written from
docs/proofs.md ("File formats", "The proof file") alone, with the Python 3
standard library only (Ed25519 verification is RFC 8032 in pure Python).
It checks both event hash versions: an `extra` holding a version 1 event's
canonical JSON, and a version 2 disclosure (the event, salts, and the
commitments of withheld values), whose withheld fields it names.

    python3 verify_proof.py FILE PUBLIC_KEY

PUBLIC_KEY is a file holding the key's 64 hex characters (`pgtrail keygen`'s
`.pub`), or those characters themselves. Exit 0 and a summary when the proof
verifies; exit 1 and the reason when it does not.
"""

import base64
import hashlib
import json
import os
import re
import sys

HEADER = "c2sp.org/tlog-proof@v1"
DECIMAL = re.compile(r"(0|[1-9][0-9]*)\Z")
HEX64 = re.compile(r"[0-9a-f]{64}\Z")
INTEGER = re.compile(r"-?(0|[1-9][0-9]*)\Z")
V2_PREFIX = b"pgtrail-event-v2\n"
PARTS = ("new", "old", "pk")
EM_DASH = "\u2014"


class Refused(Exception):
    """The proof does not verify; the message says why."""


# --- Ed25519 verification (RFC 8032, section 5.1.7) ---------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(a, b):
    # Extended homogeneous coordinates (X, Y, Z, T), RFC 8032 5.1.4.
    x = (a[1] - a[0]) * (b[1] - b[0]) % P
    y = (a[1] + a[0]) * (b[1] + b[0]) % P
    c = 2 * a[3] * b[3] * D % P
    z = 2 * a[2] * b[2] % P
    e, f, g, h = y - x, z - c, z + c, y + x
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s, point):
    result = (0, 1, 1, 0)
    while s:
        if s & 1:
            result = _add(result, point)
        point = _add(point, point)
        s >>= 1
    return result


def _equal(a, b):
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def _x_from_y(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def _decode_point(raw):
    n = int.from_bytes(raw, "little")
    y, sign = n & ((1 << 255) - 1), n >> 255
    x = _x_from_y(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


_GY = 4 * pow(5, P - 2, P) % P
BASE = (_x_from_y(_GY, 0), _GY, 1, _x_from_y(_GY, 0) * _GY % P)


def ed25519_verify(public, message, signature):
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decode_point(public)
    r = _decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % L
    return _equal(_mul(s, BASE), _add(r, _mul(k, a)))


# --- the proof file -------------------------------------------------------


def b64(text, length=None):
    """Standard base64 with padding, in its one spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise Refused(f"'{text[:20]}' is not base64") from None
    if base64.b64encode(raw).decode() != text or (length is not None and len(raw) != length):
        raise Refused(f"'{text[:20]}' is not {length or 'some'} bytes of base64")
    return raw


def parse(text):
    lines = text.split("\n")
    if lines[0] != HEADER:
        raise Refused(f"the first line is not {HEADER}")
    if len(lines) < 4 or not lines[1].startswith("extra "):
        raise Refused("no extra line")
    extra = b64(lines[1][len("extra "):])
    if not lines[2].startswith("index ") or not DECIMAL.match(lines[2][len("index "):]):
        raise Refused("no index line")
    index = int(lines[2][len("index "):])
    hashes, at = [], 3
    while at < len(lines) and lines[at] != "":
        hashes.append(b64(lines[at], 32))
        at += 1
    if at >= len(lines):
        raise Refused("no empty line before the checkpoint")
    note = "\n".join(lines[at + 1:])
    return extra, index, hashes, note


def parse_note(note):
    if not note.endswith("\n"):
        raise Refused("the checkpoint does not end with a newline")
    body, sep, signatures = note.partition("\n\n")
    if not sep:
        raise Refused("the checkpoint has no empty line before its signatures")
    text = body + "\n"
    tree = body.split("\n")
    if len(tree) < 3 or any(line == "" for line in tree):
        raise Refused("the checkpoint's text is not origin, size, root and extensions")
    origin, size, root = tree[0], tree[1], tree[2]
    if not DECIMAL.match(size):
        raise Refused("the checkpoint's size is not a decimal")
    sigs = []
    for line in signatures[:-1].split("\n"):
        if not line.startswith(EM_DASH + " "):
            raise Refused(f"'{line[:30]}' is not a signature line")
        name, _, blob = line[2:].partition(" ")
        raw = b64(blob)
        if len(raw) < 5 or not name:
            raise Refused("a signature line is too short")
        sigs.append((name, raw[:4], raw[4:]))
    pgtrail = [line.split(" ") for line in tree[3:] if line.startswith("pgtrail ")]
    if len(pgtrail) != 1 or len(pgtrail[0]) != 4:
        raise Refused("the checkpoint has no 'pgtrail <kind> <hash> <time>' line")
    return text, origin, int(size), b64(root, 32), pgtrail[0], sigs


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162, 2.1.3.2."""
    if index >= size:
        raise Refused(f"index {index} is not in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise Refused("the proof is too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Refused("the proof is too short")
    if r != root:
        raise Refused("the proof does not lead to the checkpoint's root")


def no_repeated_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Refused("the event has a repeated key")
    return dict(pairs)


class Number:
    """A JSON number as written: its text is what the canonical form keeps."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def no_constant(name):
    raise Refused(f"{name} is not JSON")


def read_json(raw):
    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=no_repeated_keys,
            parse_int=Number,
            parse_float=Number,
            parse_constant=no_constant,
        )
    except ValueError as e:
        raise Refused(f"the extra bytes are not JSON: {e}") from None


def canonical(value):
    """Canonical JSON: keys in code point (= UTF-8 byte) order, no
    whitespace, numbers as written, only '"', '\\' and control characters
    escaped."""
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(canonical(k) + ":" + canonical(v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, Number):
        return value.text
    return json.dumps(value, ensure_ascii=False)


def digests(value, what):
    """`salts` or `withheld`: parts (pk, old, new) of column -> 64 hex."""
    if not isinstance(value, dict):
        raise Refused(f"{what} is not an object")
    for part, columns in value.items():
        if part not in PARTS or not isinstance(columns, dict) or not columns:
            raise Refused(f"{what}.{part} is not a part with members")
        for column, digest in columns.items():
            if not isinstance(digest, str) or not HEX64.match(digest):
                raise Refused(f"{what}.{part}.{column} is not 64 lowercase hex")
    return value


def open_extra(extra):
    """The event the extra shows, its hash (32 bytes), the withheld fields."""
    doc = read_json(extra)
    if not isinstance(doc, dict):
        raise Refused("the extra is not a JSON object")
    if "event" not in doc:
        # Version 1: the event's canonical JSON, hashed as it is.
        if "nonce" in doc:
            raise Refused("a version 1 extra holds a nonce")
        return doc, hashlib.sha256(extra).digest(), []
    # Version 2: a disclosure.
    if sorted(doc) != ["event", "salts", "withheld"]:
        raise Refused("the disclosure's members are not event, salts and withheld")
    if canonical(doc).encode("utf-8") != extra:
        raise Refused("the disclosure is not in its canonical form")
    event = doc["event"]
    if not isinstance(event, dict) or "nonce" in event or "hash" in event:
        raise Refused("the disclosure's event is not an event without nonce and hash")
    salts = digests(doc["salts"], "salts")
    withheld = digests(doc["withheld"], "withheld")
    committed = dict(event)
    for part in PARTS:
        shown = event.get(part)
        hidden = withheld.get(part, {})
        if shown is not None and not isinstance(shown, dict):
            raise Refused(f"the event's {part} is not an object")
        if sorted(shown or {}) != sorted(salts.get(part, {})):
            raise Refused(f"the salts of {part} are not one per value shown")
        if hidden and shown is None:
            raise Refused(f"{part} values are withheld from an event without {part}")
        if set(hidden) & set(shown or {}):
            raise Refused(f"a column of {part} is both shown and withheld")
        if shown is None:
            continue
        commitments = dict(hidden)
        for column, value in shown.items():
            salt = bytes.fromhex(salts[part][column])
            value_json = canonical(value).encode("utf-8")
            commitments[column] = hashlib.sha256(salt + value_json).hexdigest()
        committed[part] = commitments
    preimage = V2_PREFIX + canonical(committed).encode("utf-8")
    names = sorted(f"{part}.{column}" for part, cols in withheld.items() for column in cols)
    return event, hashlib.sha256(preimage).digest(), names


def verify(data, public):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("the file is not UTF-8") from None
    extra, index, proof, note = parse(text)
    signed, origin, size, root, pgtrail, sigs = parse_note(note)

    event, event_hash, withheld = open_extra(extra)
    seq, prev = event.get("seq"), event.get("prev_hash")
    seq = int(seq.text) if isinstance(seq, Number) and INTEGER.match(seq.text) else None
    if seq != index + 1:
        raise Refused(f"the event's seq {seq!r} is not index + 1 = {index + 1}")
    if not isinstance(prev, str) or not HEX64.match(prev) or (seq == 1 and prev != "0" * 64):
        raise Refused("the event's prev_hash is not a link of a chain")

    leaf = hashlib.sha256(b"\x00" + event_hash).digest()
    verify_inclusion(index, size, leaf, proof, root)

    key_id = hashlib.sha256(origin.encode() + b"\n" + b"\x01" + public).digest()[:4]
    if not any(
        name == origin and kid == key_id and ed25519_verify(public, signed.encode(), sig)
        for name, kid, sig in sigs
    ):
        raise Refused("the checkpoint is not signed by this key under its origin")
    if not origin.startswith("pgtrail/store/"):
        raise Refused(f"the origin {origin} is not a pgtrail store")
    if index + 1 == size and pgtrail[2] != event_hash.hex():
        raise Refused("the checkpoint names another hash for its last event")
    return event, origin, size, pgtrail[3], withheld


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    key_arg = argv[2]
    key_text = open(key_arg).read().strip() if os.path.exists(key_arg) else key_arg
    if not HEX64.match(key_text):
        print("error: the public key is not 64 hex characters", file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        data = f.read()
    try:
        event, origin, size, time, withheld = verify(data, bytes.fromhex(key_text))
    except Refused as e:
        print(f"FAILED: {e}")
        return 1
    table = ".".join(x for x in (event.get("schema"), event.get("table")) if x)
    who = event.get("app_user") or event.get("db_user") or "-"
    print(
        f"OK: entry {event['seq']} of the log {origin} whose signed size was {size} at {time}: "
        f"{event.get('operation', event.get('kind'))} on {table or '-'} by {who} "
        f"at {event.get('captured_at')}"
    )
    if withheld:
        print(f"withheld: {', '.join(withheld)} {EM_DASH} their commitments are in the file")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
