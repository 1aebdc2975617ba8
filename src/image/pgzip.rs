//! A gzip writer that compresses on every core and still gives the same bytes for the
//! same input on any machine.
//!
//! The input is cut into fixed 1 MiB chunks; each chunk becomes one complete gzip
//! member (no name, mtime 0, unknown OS, a fixed level), and the members are written in
//! order. A sequence of members is one valid gzip stream (RFC 1952, section 2.2): Go's
//! `compress/gzip` (Docker, containerd, skopeo, umoci), zlib's `gzip -d` and flate2's
//! `MultiGzDecoder` all read it as one file. The output depends only on the input, the
//! chunk size and the level, never on the thread count or the timing, so layer digests
//! stay reproducible. Chunks compress without the previous chunk as a dictionary, which
//! costs well under 1% of size at 1 MiB (pigz keeps the dictionary, at the price of a
//! custom deflate; not worth it here).
//!
//! Memory is bounded: at most `2 x threads` chunks are in flight at once.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// The size of the input chunk that becomes one gzip member.
pub const CHUNK: usize = 1 << 20;

/// Compresses what is written to it into `out`, in parallel; [`finish`](Self::finish)
/// writes the last members and returns `out`. Each full chunk is compressed by a worker
/// thread of this writer while the caller goes on filling the next; members are written
/// in input order. The workers are its own, not rayon's: the caller blocks waiting for
/// members, which on a pool thread (the assembler runs on rayon) could starve the pool.
pub struct ParallelGz<W: Write> {
    out: W,
    level: u32,
    current: Vec<u8>,
    /// Members being compressed, oldest first.
    in_flight: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_in_flight: usize,
    wrote_any: bool,
    workers: Workers,
}

type Job = (Vec<u8>, u32, SyncSender<io::Result<Vec<u8>>>);

/// Threads that compress chunks until their job channel closes (on drop).
struct Workers {
    jobs: Option<SyncSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn start(n: usize) -> Workers {
        let (tx, rx) = sync_channel::<Job>(n);
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..n)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((chunk, level, reply)) = job else { return };
                    let _ = reply.send(member(&chunk, level));
                })
            })
            .collect();
        Workers { jobs: Some(tx), threads }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl<W: Write> ParallelGz<W> {
    /// One worker per core.
    pub fn new(out: W, level: u32) -> ParallelGz<W> {
        ParallelGz::with_threads(out, level, std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn with_threads(out: W, level: u32, threads: usize) -> ParallelGz<W> {
        let threads = threads.max(1);
        ParallelGz {
            out,
            level,
            current: Vec::with_capacity(CHUNK),
            in_flight: VecDeque::new(),
            max_in_flight: 2 * threads,
            wrote_any: false,
            workers: Workers::start(threads),
        }
    }

    /// Hands the current chunk to a worker; writes finished members while too many are
    /// in flight.
    fn submit(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.current, Vec::with_capacity(CHUNK));
        let (tx, rx) = sync_channel(1);
        let jobs = self.workers.jobs.as_ref().expect("workers run until drop");
        jobs.send((chunk, self.level, tx)).map_err(|_| io::Error::other("the compression workers stopped"))?;
        self.in_flight.push_back(rx);
        while self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else { return Ok(()) };
        let m = rx.recv().map_err(|_| io::Error::other("a compression worker died"))??;
        self.out.write_all(&m)?;
        self.wrote_any = true;
        Ok(())
    }

    /// Writes everything still buffered and returns the inner writer. Empty input gives
    /// one empty member, so the result is always a valid gzip file.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() || (!self.wrote_any && self.in_flight.is_empty()) {
            self.submit()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        // The workers stop as the rest of `self` drops here.
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (CHUNK - self.current.len()).min(buf.len());
            self.current.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.current.len() == CHUNK {
                self.submit()?;
            }
        }
        Ok(n)
    }

    /// Members are only written whole: this flushes the inner writer, not the chunk.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One chunk as one deterministic gzip member.
fn member(chunk: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::with_capacity(chunk.len() / 2 + 64), flate2::Compression::new(level));
    gz.write_all(chunk)?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(len: usize) -> Vec<u8> {
        // Half text, half noise: both compressible and incompressible stretches.
        let mut x = 0x9e3779b97f4a7c15u64;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 4096) % 2 == 0 {
                    b"archfarm "[i % 9]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    fn compress(input: &[u8], writes: usize) -> Vec<u8> {
        let mut gz = ParallelGz::new(Vec::new(), 6);
        for piece in input.chunks(input.len().div_ceil(writes).max(1)) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn round_trips_at_every_boundary_and_is_one_gzip_file_to_gzip_itself() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + CHUNK / 2, 40 * CHUNK + 7] {
            let input = data(len);
            let out = compress(&input, 5);
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&out[..]).read_to_end(&mut back).unwrap();
            assert!(back == input, "{len} bytes did not round-trip");
            if len == 3 * CHUNK + CHUNK / 2 {
                let mut gunzip = std::process::Command::new("gzip")
                    .arg("-dc")
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("gzip on PATH");
                let mut stdin = gunzip.stdin.take().unwrap();
                let feeder = std::thread::spawn(move || stdin.write_all(&out).unwrap());
                let got = gunzip.wait_with_output().unwrap();
                feeder.join().unwrap();
                assert!(got.status.success() && got.stdout == input, "gzip -d reads the members as one file");
            }
        }
    }

    #[test]
    fn the_bytes_depend_only_on_the_input_not_on_how_it_was_written_or_the_thread_count() {
        let input = data(9 * CHUNK + 123);
        let one_go = compress(&input, 1);
        assert_eq!(compress(&input, 1000), one_go);
        let mut single = ParallelGz::with_threads(Vec::new(), 6, 1);
        single.write_all(&input).unwrap();
        assert_eq!(single.finish().unwrap(), one_go, "one thread gives the same bytes");
        let mut many = ParallelGz::with_threads(Vec::new(), 6, 7);
        many.write_all(&input).unwrap();
        assert_eq!(many.finish().unwrap(), one_go, "seven threads give the same bytes");
    }
}
