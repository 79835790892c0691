//! Seeded fuzz of the session (`pgtrail_testkit::fuzz`: a failure prints
//! its seed and replays exactly; `PGTRAIL_FUZZ_SCALE` runs longer).
//!
//! - Well-formed conversations, cut into random pieces: every byte is
//!   forwarded unchanged, and each statement gives exactly one record.
//! - The same conversations with frames reordered, dropped, duplicated or
//!   mutated, from both sides: no panic, only whole input frames are ever
//!   forwarded, and what the session keeps stays bounded by its input.

use std::time::{Duration, UNIX_EPOCH};

use pgtrail_testkit::fuzz::{cases, mutate, rng, Rng};

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Client,
    Server,
}

/// One exchange: the frames in order, and the records it must give.
fn exchange(rng: &mut Rng) -> (Vec<(Dir, Vec<u8>)>, usize) {
    use Dir::{Client as C, Server as S};
    match rng.below(7) {
        0 => {
            let n = 1 + rng.below(3);
            let sql = vec!["SELECT 1"; n].join("; ");
            let mut frames = vec![(C, query(&sql))];
            for _ in 0..n {
                frames.push((S, row_description()));
                frames.push((S, data_row(b"1")));
                frames.push((S, complete("SELECT 1")));
            }
            frames.push((S, ready(b'I')));
            (frames, n)
        }
        1 => (
            vec![
                (C, query("SELECT 1; SELECT x")),
                (S, complete("SELECT 1")),
                (S, error("42703", "no column x")),
                (S, ready(b'I')),
            ],
            2,
        ),
        2 => {
            // A pipeline of n statements, failing at `fail` (or not at all).
            let n = 1 + rng.below(4);
            let fail = rng.below(n + 1);
            let mut client = vec![(C, parse("", "SELECT $1"))];
            let mut server = vec![(S, parse_complete())];
            for i in 0..n {
                client.push((C, bind("", "", &[Some(b"7")])));
                client.push((C, execute("", 0)));
                if i < fail {
                    server.push((S, bind_complete()));
                    server.push((S, data_row(b"7")));
                    server.push((S, complete("SELECT 1")));
                } else if i == fail {
                    server.push((S, error("22012", "division by zero")));
                }
            }
            client.push((C, sync()));
            server.push((S, ready(b'I')));
            client.extend(server);
            (client, n)
        }
        3 => (
            vec![
                (C, query("COPY t FROM STDIN")),
                (S, copy_response_in()),
                (C, copy_data(b"1\n")),
                (C, copy_done()),
                (S, complete("COPY 1")),
                (S, ready(b'I')),
            ],
            1,
        ),
        4 => (
            vec![
                (C, parse("s", "SELECT 1")),
                (C, describe(b'S', "s")),
                (C, flush()),
                (S, parse_complete()),
                (S, no_data()),
                (C, close(b'S', "s")),
                (C, sync()),
                (S, close_complete()),
                (S, ready(b'I')),
            ],
            0,
        ),
        5 => (vec![(S, notice("hello")), (S, notification_frame())], 0),
        _ => (
            vec![
                (C, query("COPY t TO STDOUT")),
                (S, msg(b'H', &[0, 0, 0])),
                (S, copy_data(b"1\n")),
                (S, copy_done()),
                (S, complete("COPY 1")),
                (S, ready(b'I')),
            ],
            1,
        ),
    }
}

fn copy_response_in() -> Vec<u8> {
    msg(b'G', &[0, 0, 0])
}

fn notification_frame() -> Vec<u8> {
    msg(b'A', b"\0\0\0\x01ch\0p\0")
}

fn conversation(rng: &mut Rng) -> (Vec<(Dir, Vec<u8>)>, usize) {
    let mut frames = vec![(Dir::Client, startup_message()), (Dir::Server, login_ok())];
    let mut records = 0;
    for _ in 0..1 + rng.below(6) {
        let (more, n) = exchange(rng);
        frames.extend(more);
        records += n;
    }
    (frames, records)
}

/// Feeds frames (each cut into random pieces); returns what was forwarded
/// each way, the records, and the error that ended the session, if any.
fn feed(
    rng: &mut Rng,
    session: &mut Session,
    frames: &[(Dir, Vec<u8>)],
) -> (Vec<u8>, Vec<u8>, usize, Option<SessionError>) {
    let (mut to_server, mut to_client, mut records) = (Vec::new(), Vec::new(), 0);
    let mut clock = 0;
    for (dir, bytes) in frames {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let cut = 1 + rng.below(rest.len());
            let (piece, tail) = rest.split_at(cut);
            rest = tail;
            clock += 1;
            let now = UNIX_EPOCH + Duration::from_micros(clock);
            let result = match dir {
                Dir::Client => session.client_data(piece, now),
                Dir::Server => session.server_data(piece, now),
            };
            to_server.extend_from_slice(&session.take_to_server().unwrap_or_default());
            to_client.extend_from_slice(&session.take_to_client().unwrap_or_default());
            while session.next_record().is_some() {
                records += 1;
            }
            if let Err(e) = result {
                return (to_server, to_client, records, Some(e));
            }
        }
    }
    (to_server, to_client, records, None)
}

fn concat(frames: &[(Dir, Vec<u8>)], dir: Dir) -> Vec<u8> {
    frames
        .iter()
        .filter(|(d, _)| *d == dir)
        .flat_map(|(_, b)| b.clone())
        .collect()
}

#[test]
fn well_formed_conversations_pass_through_unchanged() {
    let mut rng = rng(0x5E55_1011);
    for _ in 0..cases(300) {
        let (frames, expected) = conversation(&mut rng);
        let mut session = Session::new(SessionConfig::default(), UNIX_EPOCH);
        let (to_server, to_client, records, error) = feed(&mut rng, &mut session, &frames);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(to_server, concat(&frames, Dir::Client));
        assert_eq!(to_client, concat(&frames, Dir::Server));
        assert_eq!(records, expected, "one record per statement");
        assert_eq!(session.pending_replies(), 0);
    }
}

#[test]
fn reordered_and_mutated_frames_never_panic() {
    let mut rng = rng(0xBAD_F00D);
    for _ in 0..cases(1500) {
        let (mut frames, _) = conversation(&mut rng);
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(frames.len());
            match rng.below(4) {
                0 => {
                    let other = rng.below(frames.len());
                    frames.swap(at, other);
                }
                1 => {
                    frames.remove(at);
                }
                2 => {
                    let copy = frames[at].clone();
                    frames.insert(at, copy);
                }
                _ => frames[at].1 = mutate(&mut rng, &frames[at].1),
            }
        }
        let mut session = Session::new(SessionConfig::default(), UNIX_EPOCH);
        let (to_server, to_client, records, _) = feed(&mut rng, &mut session, &frames);
        let client_in = concat(&frames, Dir::Client);
        let server_in = concat(&frames, Dir::Server);
        // Forwarded bytes are input bytes: the client's, minus answered
        // SSL/GSS requests (not in this corpus), so a prefix.
        assert!(
            client_in.starts_with(&to_server),
            "forwarded only what came in"
        );
        assert!(
            server_in.starts_with(&to_client),
            "forwarded only what came in"
        );
        // Bounded: nothing kept beyond what the input could make.
        let frames_in = frames.len();
        assert!(session.pending_replies() <= frames_in);
        assert!(records <= frames_in * 2);
        session.close(UNIX_EPOCH);
    }
}
