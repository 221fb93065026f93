//! A connection split into a sending and a receiving half, for pipelined requests.
//!
//! The writer registers each request's reply kind and a caller tag in an in-order queue
//! *before* its bytes reach the socket, so the reader always knows how to decode the next
//! reply and whose it is. Servers answer in request order (node.md §3.1).

use std::time::{Duration, Instant};

use beansdb_protocol::{ReplyKind, Response, ResponseDecoder};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::client::{reserve_for, with_timeout};
use crate::error::{Error, Result};
use crate::request::Request;

struct Pending<T> {
    kind: ReplyKind,
    tag: T,
    /// When the request was queued; its reply is due within the timeout from then.
    queued: Instant,
}

pub(crate) fn split<T>(
    stream: TcpStream,
    rbuf: BytesMut,
    decoder: ResponseDecoder,
    timeout: Option<Duration>,
) -> (PipelineWriter<T>, PipelineReader<T>) {
    let (r, w) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    (
        PipelineWriter {
            half: w,
            buf: BytesMut::with_capacity(4096),
            tags: tx,
            timeout,
            bytes_written: 0,
            broken: false,
        },
        PipelineReader {
            half: r,
            buf: rbuf,
            decoder,
            tags: rx,
            current: None,
            timeout,
            bytes_read: 0,
            broken: false,
        },
    )
}

/// Sending half: queue requests with [`PipelineWriter::queue`] and write them with
/// [`PipelineWriter::flush`], or do both with [`PipelineWriter::send`].
pub struct PipelineWriter<T> {
    half: OwnedWriteHalf,
    buf: BytesMut,
    tags: mpsc::UnboundedSender<Pending<T>>,
    timeout: Option<Duration>,
    bytes_written: u64,
    broken: bool,
}

impl<T> PipelineWriter<T> {
    /// Encodes a request into the send buffer and registers `tag` for its reply. A request
    /// without a reply (`noreply`) drops its tag. Returns whether a reply is expected.
    pub fn queue(&mut self, req: &Request<'_>, tag: T) -> Result<bool> {
        if self.broken {
            return Err(Error::Broken);
        }
        let Some(kind) = req.encode(&mut self.buf)? else {
            return Ok(false);
        };
        let pending = Pending {
            kind,
            tag,
            queued: Instant::now(),
        };
        // The reader is gone only if its half was dropped; the reply then has no consumer.
        if self.tags.send(pending).is_err() {
            self.broken = true;
            return Err(Error::Broken);
        }
        Ok(true)
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        if self.broken {
            return Err(Error::Broken);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.broken = true;
        let r = with_timeout(self.timeout, async {
            self.half.write_all(&self.buf).await?;
            Ok(())
        })
        .await;
        if r.is_ok() {
            self.bytes_written += self.buf.len() as u64;
            self.buf.clear();
            self.broken = false;
        }
        r
    }

    /// [`PipelineWriter::queue`] then [`PipelineWriter::flush`].
    pub async fn send(&mut self, req: &Request<'_>, tag: T) -> Result<bool> {
        let expects = self.queue(req, tag)?;
        self.flush().await?;
        Ok(expects)
    }

    /// Bytes not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Ends sending: flushes, then closes the tag queue so the reader's
    /// [`PipelineReader::recv`] returns `None` after the last reply. The socket stays open
    /// (no FIN, which could make a server drop replies still owed) until the returned half
    /// is dropped.
    pub async fn finish(mut self) -> Result<OwnedWriteHalf> {
        self.flush().await?;
        Ok(self.half)
    }
}

/// Receiving half: [`PipelineReader::recv`] yields each tag with its reply, in order.
pub struct PipelineReader<T> {
    half: OwnedReadHalf,
    buf: BytesMut,
    decoder: ResponseDecoder,
    tags: mpsc::UnboundedReceiver<Pending<T>>,
    /// The request whose reply is being read; kept here so a cancelled `recv` loses nothing.
    current: Option<Pending<T>>,
    timeout: Option<Duration>,
    bytes_read: u64,
    broken: bool,
}

impl<T> PipelineReader<T> {
    /// The next tag and its reply. Error lines come back as [`Response::Error`]. `None` once
    /// the writer has finished (or was dropped) and every reply has been read.
    ///
    /// After a transport failure the failing request gets the error and every later one
    /// [`Error::Broken`] without waiting; then `None`. Cancel safe: a dropped call resumes
    /// where it stopped.
    pub async fn recv(&mut self) -> Option<(T, Result<Response>)> {
        if self.broken {
            return self
                .current
                .take()
                .or_else(|| self.tags.try_recv().ok())
                .map(|p| (p.tag, Err(Error::Broken)));
        }
        if self.current.is_none() {
            let p = self.tags.recv().await?;
            self.decoder.expect(p.kind);
            self.current = Some(p);
        }
        let deadline = self
            .current
            .as_ref()
            .and_then(|p| self.timeout.map(|t| (p.queued + t, t)));
        let r = match deadline {
            Some((at, t)) => {
                match tokio::time::timeout_at(at.into(), Self::read_reply(self)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout(t)),
                }
            }
            None => Self::read_reply(self).await,
        };
        self.broken = r.is_err();
        self.current.take().map(|p| (p.tag, r))
    }

    async fn read_reply(&mut self) -> Result<Response> {
        loop {
            if let Some(resp) = self.decoder.decode(&mut self.buf)? {
                return Ok(resp);
            }
            reserve_for(&mut self.buf, &self.decoder);
            let n = self.half.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(Error::Closed);
            }
            self.bytes_read += n as u64;
        }
    }

    /// Tags of requests still without a reply (including one whose `recv` was cancelled),
    /// taken without waiting. Use after abandoning the connection.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out: Vec<T> = self.current.take().map(|p| p.tag).into_iter().collect();
        while let Ok(p) = self.tags.try_recv() {
            out.push(p.tag);
        }
        out
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}
