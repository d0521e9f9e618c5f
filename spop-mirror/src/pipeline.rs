//! One pipelined HTTP/1.1 connection to a target (`pipeline = N`), without
//! the event loop: requests are appended to one output buffer and written
//! without waiting, and answers are read and counted when asked, without
//! waiting either.
//!
//! The socket is a non-blocking [`std::net::TcpStream`] that is *not*
//! registered with tokio's reactor: an answer arriving does not wake the
//! thread. The worker (`mirror::pipeline_worker`) reads answers when it next
//! has requests to write, and on a 1 ms tick while requests are in flight.
//! Measured in issue 11 (HAProxy 3.4, everything mirrored): about half the
//! system calls (1.07 against 1.95) and a third of the context switches
//! (0.09 against 0.28) per mirrored request of waiting on each batch's
//! answers, for the price of answer latencies seen up to one tick late.
//!
//! Answers are counted and skipped, except those of requests handed over
//! with a `keep`: those are kept ([`Kept`]) and handed back with the
//! caller's token `K` (the mirror's comparison tag).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::comparing::Kept;
use crate::h1::Answers;
#[cfg(test)]
use crate::h1::READ_CHUNK;

/// Why a connection was given up; every request in flight on it is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The target closed the connection, or its answer said it would.
    Closed,
    /// An answer that is not HTTP/1.x, or bytes nobody asked for.
    Invalid,
    /// A read or write failed.
    Io,
    /// The oldest request in flight was not answered in time.
    TimedOut,
}

/// A pipelined connection: the socket, the bytes still to write, the
/// requests written and not answered (oldest first), and the answer reader.
#[derive(Debug)]
pub(crate) struct Pipe<K> {
    /// `None` only if [`Pipe::ready`] failed to hand it back (lost).
    stream: Option<TcpStream>,
    /// Bytes to write, from `written` on. Requests are encoded straight
    /// into it ([`Pipe::output`]).
    out: Vec<u8>,
    written: usize,
    /// The requests in flight, oldest first.
    sent: VecDeque<Sent<K>>,
    answers: Answers,
    /// Bytes one [`Pipe::read_answers`] reads at most ([`READ_BUDGET`]).
    read_budget: usize,
    /// Bytes of answers read in all.
    received: u64,
}

/// The most bytes of answers one [`Pipe::read_answers`] reads; the rest
/// waits for the next batch or tick.
const READ_BUDGET: usize = 256 * 1024;

/// A request in flight: was it a HEAD, when it was handed to the
/// connection, and whether its answer is kept (up to how many body bytes,
/// and the caller's token).
#[derive(Debug)]
struct Sent<K> {
    head: bool,
    at: Instant,
    keep: Option<(usize, K)>,
}

/// An answer read ([`Pipe::read_answers`]).
#[derive(Debug)]
pub(crate) struct Answered<K> {
    pub(crate) status: u16,
    /// From the request's hand-over to when the answer was read.
    pub(crate) took: Duration,
    /// The answer kept, with its token, for a request handed over with a
    /// `keep`.
    pub(crate) kept: Option<(K, Kept)>,
}

/// Past this capacity, the output buffer is given back once written.
const KEEP_OUTPUT: usize = 256 * 1024;

/// A connection's socket while the reactor watches it; back in its place,
/// unwatched, when dropped.
struct Watched<'a> {
    stream: Option<tokio::net::TcpStream>,
    home: &'a mut Option<TcpStream>,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            *self.home = s.into_std().ok();
        }
    }
}

impl<K> Pipe<K> {
    /// Takes a connected stream; sets it non-blocking.
    pub(crate) fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream: Some(stream),
            out: Vec::with_capacity(16 * 1024),
            written: 0,
            sent: VecDeque::new(),
            answers: Answers::default(),
            read_budget: READ_BUDGET,
            received: 0,
        })
    }

    /// Requests handed to the connection and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.sent.len()
    }

    /// Some output is still waiting for room in the socket.
    pub(crate) fn writing(&self) -> bool {
        self.written < self.out.len()
    }

    /// Requests in flight, or output waiting to be written.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight() > 0 || self.writing()
    }

    /// When the oldest request in flight was handed over.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.sent.front().map(|s| s.at)
    }

    /// The output buffer, to encode a request into; then [`Pipe::sent`].
    pub(crate) fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// A request was appended to the output at `at` (`head`: it is a HEAD,
    /// whose answer has no body). With `keep` (a body limit and a token),
    /// its answer is kept and handed back with the token.
    pub(crate) fn sent(&mut self, head: bool, at: Instant, keep: Option<(usize, K)>) {
        self.sent.push_back(Sent { head, at, keep });
    }

    /// Waits, up to `deadline`, until the socket has answers to read (or
    /// room to write, while output is pending). The socket is watched by
    /// tokio's reactor only meanwhile (two `epoll_ctl`), for when the
    /// target's connections cannot go on without answers: all N requests
    /// in flight on each, or output stuck. Cancel-safe: dropped before the
    /// end (another connection was ready first), it leaves the connection
    /// as it was, unwatched.
    pub(crate) async fn ready(&mut self, deadline: Instant) -> Result<(), Lost> {
        let interest = if self.writing() {
            tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE
        } else {
            tokio::io::Interest::READABLE
        };
        let stream = self.stream.take().ok_or(Lost::Io)?;
        // Given back when the wait ends or is dropped (another connection
        // was ready first): cancelling loses nothing.
        let watched = Watched {
            stream: Some(tokio::net::TcpStream::from_std(stream).map_err(|_| Lost::Io)?),
            home: &mut self.stream,
        };
        if let Some(s) = &watched.stream {
            let deadline = tokio::time::Instant::from_std(deadline);
            let _ = tokio::time::timeout_at(deadline, s.ready(interest)).await;
        }
        drop(watched);
        self.stream.as_ref().map(|_| ()).ok_or(Lost::Io)
    }

    /// Writes what the socket takes now; `Ok` also when some output is left
    /// for later ([`Pipe::writing`]).
    pub(crate) fn flush(&mut self) -> Result<(), Lost> {
        let stream = self.stream.as_ref().ok_or(Lost::Io)?;
        while let Some(rest) = self.out.get(self.written..).filter(|r| !r.is_empty()) {
            match (&*stream).write(rest) {
                Ok(0) => return Err(Lost::Io),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(Lost::Io),
            }
        }
        self.out.clear();
        self.written = 0;
        if self.out.capacity() > KEEP_OUTPUT {
            self.out = Vec::with_capacity(16 * 1024);
        }
        Ok(())
    }

    /// Reads the answers there are now and calls `answered` for each, in
    /// order (`took`: from the request's hand-over to `now`). An error ends
    /// the connection; the requests still in flight are then lost
    /// ([`Pipe::in_flight`] tells how many).
    pub(crate) fn read_answers(
        &mut self,
        now: Instant,
        mut answered: impl FnMut(Answered<K>),
    ) -> Result<(), Lost> {
        // At most READ_BUDGET bytes a call: a target sending without end
        // (a huge body) must not keep the thread, which also writes ACKs.
        let mut budget = self.read_budget;
        loop {
            self.consume(now, &mut answered)?;
            let stream = self.stream.as_ref().ok_or(Lost::Io)?;
            let spare = self.answers.spare();
            let room = spare.len();
            if room == 0 {
                return Err(Lost::Invalid);
            }
            match (&*stream).read(spare) {
                Ok(0) => {
                    if let Some(status) = self.answers.eof() {
                        if let Some(sent) = self.sent.pop_front() {
                            answered(self.answered(sent, status, now));
                        }
                    }
                    return Err(Lost::Closed);
                }
                Ok(n) => {
                    self.answers.filled(n);
                    self.received += n as u64;
                    budget = budget.saturating_sub(n);
                    if n < room || budget == 0 {
                        // A short read: the socket is empty for now (no
                        // second read to learn it); or enough for now.
                        return self.consume(now, &mut answered);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(Lost::Io),
            }
        }
    }

    /// The answer of `sent`, just completed.
    fn answered(&mut self, sent: Sent<K>, status: u16, now: Instant) -> Answered<K> {
        let kept = self.answers.take_kept();
        Answered {
            status,
            took: now.saturating_duration_since(sent.at),
            kept: sent.keep.map(|(_, k)| k).zip(kept),
        }
    }

    /// Completes the answers buffered.
    fn consume(
        &mut self,
        now: Instant,
        answered: &mut impl FnMut(Answered<K>),
    ) -> Result<(), Lost> {
        while let Some(front) = self.sent.front() {
            match self
                .answers
                .next(front.head, front.keep.as_ref().map(|k| k.0))
            {
                Ok(Some(status)) => {
                    if let Some(sent) = self.sent.pop_front() {
                        answered(self.answered(sent, status, now));
                    }
                    if self.answers.closing() {
                        return Err(Lost::Closed);
                    }
                }
                Ok(None) => return Ok(()),
                Err(_) => return Err(Lost::Invalid),
            }
        }
        if self.answers.buffered() > 0 {
            // An answer to no request.
            return Err(Lost::Invalid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (Pipe<u32>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (Pipe::new(c).unwrap(), s)
    }

    /// The statuses of the answers there are now.
    fn answers_now(p: &mut Pipe<u32>) -> Vec<u16> {
        let mut got = Vec::new();
        p.read_answers(Instant::now(), |a| got.push(a.status))
            .unwrap();
        got
    }

    /// Reads answers until `want` are there, the connection is lost, or a
    /// second has passed: their statuses, and how reading ended.
    fn read_until(p: &mut Pipe<u32>, want: usize) -> (Vec<u16>, Result<(), Lost>) {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        while got.len() < want && Instant::now() < deadline {
            if let Err(e) = p.read_answers(Instant::now(), |a| got.push(a.status)) {
                return (got, Err(e));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (got, Ok(()))
    }

    #[test]
    fn requests_out_answers_in_without_waiting() {
        let (mut p, mut s) = pair();
        let t0 = Instant::now();
        for (i, head) in [false, true, false].into_iter().enumerate() {
            write!(p.output(), "GET /{i} HTTP/1.1\r\n\r\n").unwrap();
            p.sent(head, t0, None);
        }
        assert_eq!(p.in_flight(), 3);
        p.flush().unwrap();
        assert!(!p.writing());
        let want = b"GET /0 HTTP/1.1\r\n\r\nGET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, want);
        // Nothing yet: no answer, no wait.
        assert!(answers_now(&mut p).is_empty());
        // The HEAD's answer announces a body it does not carry.
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n")
            .unwrap();
        s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let (statuses, read) = read_until(&mut p, 3);
        read.unwrap();
        assert_eq!(statuses, [200, 404, 201]);
        assert_eq!(p.in_flight(), 0);
        assert_eq!(p.oldest(), None);
    }

    /// The answers of requests handed over with a `keep` come back kept,
    /// with their tokens; the others are only counted. An answer up to the
    /// close is kept too.
    #[test]
    fn kept_answers_come_back_with_their_tokens() {
        let (mut p, mut s) = pair();
        let t0 = Instant::now();
        p.sent(false, t0, None);
        p.sent(false, t0, Some((4, 7)));
        p.sent(true, t0, Some((4, 8)));
        p.sent(false, t0, Some((100, 9)));
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
              HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 6\r\n\r\nabcdef\
              HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n\
              HTTP/1.0 202 Accepted\r\n\r\nto the end",
        )
        .unwrap();
        drop(s);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        let ended = loop {
            assert!(Instant::now() < deadline, "{got:?}");
            if let Err(e) = p.read_answers(Instant::now(), |a| {
                got.push((
                    a.status,
                    a.kept.map(|(token, k)| {
                        let t = k.truncated;
                        (token, k.headers.len(), t, k.into_body())
                    }),
                ));
            }) {
                break e;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(ended, Lost::Closed);
        assert_eq!(
            got,
            [
                (200, None),
                (201, Some((7, 2, true, bytes::Bytes::from("abcd")))),
                (200, Some((8, 1, false, bytes::Bytes::new()))),
                (202, Some((9, 0, false, bytes::Bytes::from("to the end")))),
            ]
        );
    }

    #[test]
    fn a_close_loses_what_is_in_flight() {
        let (mut p, mut s) = pair();
        for _ in 0..3 {
            p.output().extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            p.sent(false, Instant::now(), None);
        }
        p.flush().unwrap();
        // Read first: a close with unread bytes would be a reset (Lost::Io).
        s.read_exact(&mut [0u8; 54]).unwrap();
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le")
            .unwrap();
        drop(s);
        assert_eq!(read_until(&mut p, 3), (vec![204], Err(Lost::Closed)));
        assert_eq!(p.in_flight(), 2);
    }

    #[test]
    fn an_answer_up_to_the_close_and_connection_close() {
        let (mut p, mut s) = pair();
        p.sent(false, Instant::now(), None);
        s.write_all(b"HTTP/1.0 200 OK\r\n\r\nbody").unwrap();
        drop(s);
        assert_eq!(read_until(&mut p, 2), (vec![200], Err(Lost::Closed)));
        assert_eq!(p.in_flight(), 0);

        let (mut p, mut s) = pair();
        p.sent(false, Instant::now(), None);
        p.sent(false, Instant::now(), None);
        s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert_eq!(read_until(&mut p, 2), (vec![200], Err(Lost::Closed)));
        assert_eq!(p.in_flight(), 1);
    }

    #[test]
    fn bytes_nobody_asked_for_end_the_connection() {
        let (mut p, mut s) = pair();
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!(read_until(&mut p, 1), (vec![], Err(Lost::Invalid)));
        let (mut p, mut s) = pair();
        p.sent(false, Instant::now(), None);
        s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap();
        assert_eq!(read_until(&mut p, 1), (vec![], Err(Lost::Invalid)));
    }

    #[test]
    fn a_head_longer_than_allowed_is_refused_with_bounded_memory() {
        let (mut p, mut s) = pair();
        p.sent(false, Instant::now(), None);
        let t = std::thread::spawn(move || {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
            let line = [b'x'; 1000];
            for _ in 0..200 {
                if s.write_all(b"x-long: ")
                    .and_then(|()| s.write_all(&line))
                    .and_then(|()| s.write_all(b"\r\n"))
                    .is_err()
                {
                    break;
                }
            }
        });
        assert_eq!(read_until(&mut p, 1), (vec![], Err(Lost::Invalid)));
        drop(p);
        t.join().unwrap();
    }

    #[test]
    fn a_body_without_end_is_read_a_bounded_amount_at_a_time() {
        let (mut p, mut s) = pair();
        p.read_budget = 1;
        p.sent(false, Instant::now(), None);
        let total = 100 * 1024;
        write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").unwrap();
        s.write_all(&vec![b'x'; total]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // One read per call (the budget), however much is waiting.
        let mut statuses = answers_now(&mut p);
        assert!(
            p.received > 0 && p.received <= 2 * READ_CHUNK as u64,
            "{}",
            p.received
        );
        assert!(statuses.is_empty());
        // Further calls get the rest.
        let deadline = Instant::now() + Duration::from_secs(5);
        while statuses.is_empty() {
            assert!(Instant::now() < deadline);
            statuses = answers_now(&mut p);
        }
        assert_eq!(statuses, [200]);
    }

    /// A wait dropped before its end (another connection was ready first)
    /// leaves the connection as it was; a wait that ends finds the answer.
    #[tokio::test]
    async fn a_cancelled_wait_keeps_the_connection() {
        let (mut p, mut s) = pair();
        p.output().extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        p.sent(false, Instant::now(), None);
        p.flush().unwrap();
        let mut first = [0u8; 18];
        s.read_exact(&mut first).unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let cancelled = tokio::time::timeout(Duration::from_millis(20), p.ready(far)).await;
        assert!(cancelled.is_err(), "no answer yet: {cancelled:?}");
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), p.ready(far))
            .await
            .expect("ready once the answer is there")
            .unwrap();
        assert_eq!(answers_now(&mut p), [204]);
        // Still the same connection, and unwatched again: it writes and
        // reads as before.
        p.output().extend_from_slice(b"GET /2 HTTP/1.1\r\n\r\n");
        p.sent(false, Instant::now(), None);
        p.flush().unwrap();
        let mut got = [0u8; 19];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"GET /2 HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn output_waits_for_room_and_is_kept() {
        let (mut p, mut s) = pair();
        // More than the socket buffers take while the peer reads nothing.
        let big = vec![b'a'; 64 * 1024 * 1024];
        p.output().extend_from_slice(&big);
        p.sent(false, Instant::now(), None);
        p.flush().unwrap();
        assert!(p.writing(), "the rest waits for room");
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            let mut buf = vec![0u8; 1 << 16];
            while n < big.len() {
                n += s.read(&mut buf).unwrap();
            }
            n
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.writing() {
            assert!(Instant::now() < deadline);
            p.flush().unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(reader.join().unwrap(), 64 * 1024 * 1024);
        assert!(
            p.output().capacity() <= KEEP_OUTPUT,
            "a large output's memory is given back"
        );
    }
}
