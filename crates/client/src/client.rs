use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use beansdb_protocol::{ReplyKind, Response, ResponseDecoder, SetKind, Value};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::pipeline::{self, PipelineReader, PipelineWriter};
use crate::request::Request;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Bound on establishing the TCP connection (per resolved address).
    pub connect_timeout: Duration,
    /// Bound on one request (write and whole reply); `None` waits forever.
    pub timeout: Option<Duration>,
    /// Largest value accepted in a reply; a larger `VALUE` is a protocol error.
    pub max_value: usize,
    /// Longest reply line (`VALUE` header, `STAT`, error text).
    pub max_line: usize,
    /// Disable Nagle: every request is latency sensitive.
    pub nodelay: bool,
}

impl Default for ClientConfig {
    /// The tools' defaults (tools.md §0): connect 1 s, request 5 s.
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(1),
            timeout: Some(Duration::from_secs(5)),
            max_value: beansdb_protocol::DISCARD_LIMIT,
            max_line: beansdb_protocol::client::DEFAULT_MAX_REPLY_LINE,
            nodelay: true,
        }
    }
}

impl ClientConfig {
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    pub fn timeout(mut self, d: Option<Duration>) -> Self {
        self.timeout = d;
        self
    }

    pub fn max_value(mut self, n: usize) -> Self {
        self.max_value = n;
        self
    }
}

/// Reply to a storage command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReply {
    Stored,
    /// beansdb: the key is not a valid write key.
    NotStored,
    Exists,
    NotFound,
    /// Sent with `noreply`: nothing was awaited.
    NoReply,
}

/// One connection to a memcached-protocol server (a beansdb node, proxy, or memcached).
///
/// Requests are answered in order. [`Client::send`] queues a request without waiting, so
/// several can be pipelined and their replies read with [`Client::recv`]; the convenience
/// methods (`get`, `set`, …) need no reply outstanding. For concurrent sending and receiving
/// split the connection with [`Client::into_pipeline`].
///
/// A failed transfer (timeout, I/O, malformed reply) leaves the stream out of step, so the
/// client then refuses requests with [`Error::Broken`]; a dropped (cancelled) call does too.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    config: ClientConfig,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: ResponseDecoder,
    /// Reply kinds of requests already queued or sent, oldest first.
    pending: VecDeque<ReplyKind>,
    broken: bool,
    bytes_read: u64,
    bytes_written: u64,
}

const READ_CHUNK: usize = 64 << 10;

impl Client {
    /// Connects to `addr` (`host:port`) with [`ClientConfig::default`].
    pub async fn connect(addr: &str) -> Result<Client> {
        Client::connect_with(addr, ClientConfig::default()).await
    }

    /// Connects to the first address of `addr` that accepts within the connect timeout.
    pub async fn connect_with(addr: &str, config: ClientConfig) -> Result<Client> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|source| Error::Resolve {
                addr: addr.to_string(),
                source,
            })?
            .collect();
        let mut last = Error::NoAddress {
            addr: addr.to_string(),
        };
        for sa in addrs {
            match Client::connect_addr(sa, config.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connects to one socket address.
    pub async fn connect_addr(addr: SocketAddr, config: ClientConfig) -> Result<Client> {
        let stream =
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(Error::Connect {
                        addr: addr.to_string(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(Error::ConnectTimeout {
                        addr: addr.to_string(),
                        after: config.connect_timeout,
                    })
                }
            };
        if config.nodelay {
            stream.set_nodelay(true)?;
        }
        let decoder =
            ResponseDecoder::with_limits(ReplyKind::Retrieval, config.max_value, config.max_line);
        Ok(Client {
            stream,
            peer: addr,
            config,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(4096),
            decoder,
            pending: VecDeque::new(),
            broken: false,
            bytes_read: 0,
            bytes_written: 0,
        })
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// False after a transport or protocol failure (or a cancelled call).
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Replies still to be read with [`Client::recv`].
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Queues a request without sending it; it goes out with the next [`Client::flush`] or
    /// [`Client::recv`]. Returns whether a reply is expected.
    pub fn send(&mut self, req: &Request<'_>) -> Result<bool> {
        if self.broken {
            return Err(Error::Broken);
        }
        let kind = req.encode(&mut self.wbuf)?;
        if let Some(k) = kind {
            self.pending.push_back(k);
        }
        Ok(kind.is_some())
    }

    /// Writes all queued requests.
    pub async fn flush(&mut self) -> Result<()> {
        if self.broken {
            return Err(Error::Broken);
        }
        // Marked broken until the transfer completes: an error, a timeout or the caller
        // dropping this future all leave the stream out of step.
        self.broken = true;
        let r = with_timeout(self.config.timeout, self.write_queued()).await;
        self.broken = r.is_err();
        r
    }

    /// Reads the reply to the oldest unanswered request (flushing queued ones first). Error
    /// lines come back as [`Response::Error`], not as `Err`.
    pub async fn recv(&mut self) -> Result<Response> {
        if self.broken {
            return Err(Error::Broken);
        }
        if self.pending.is_empty() {
            return Err(Error::NothingPending);
        }
        self.broken = true;
        let r = with_timeout(self.config.timeout, async {
            self.write_queued().await?;
            self.read_reply().await
        })
        .await;
        self.broken = r.is_err();
        r
    }

    /// Sends one request and returns its reply (`None` when it expects none). Error lines
    /// come back as [`Response::Error`].
    pub async fn request(&mut self, req: &Request<'_>) -> Result<Option<Response>> {
        if self.broken {
            return Err(Error::Broken);
        }
        if !self.pending.is_empty() {
            return Err(Error::Busy(self.pending.len()));
        }
        if self.send(req)? {
            self.recv().await.map(Some)
        } else {
            self.flush().await.map(|()| None)
        }
    }

    /// Like [`Client::request`] for requests that always reply; error lines become `Err`.
    async fn call(&mut self, req: &Request<'_>) -> Result<Response> {
        match self.request(req).await? {
            Some(Response::Error { kind, msg }) => Err(Error::Server {
                kind: kind.into(),
                msg: String::from_utf8_lossy(&msg).into_owned(),
            }),
            Some(r) => Ok(r),
            None => Err(Error::Unexpected("no reply expected".into())),
        }
    }

    /// Sends raw request bytes and reads one reply of `kind`.
    pub async fn command(&mut self, bytes: &[u8], kind: ReplyKind) -> Result<Response> {
        self.call(&Request::Raw {
            bytes,
            reply: Some(kind),
        })
        .await
    }

    /// `get key`: the value, or `None` on a miss.
    pub async fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Value>> {
        let keys = [key.as_ref()];
        let mut values = self.get_multi(&keys).await?;
        Ok(values.pop())
    }

    /// `get k1 k2 …`: the hits, in the order the server sent them (request order for beansdb).
    pub async fn get_multi<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<Vec<Value>> {
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
        match self.call(&Request::Get { keys: &keys }).await? {
            Response::Values(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// [`Client::get_multi`] as a map from key to value.
    pub async fn get_map<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<BTreeMap<bytes::Bytes, Value>> {
        Ok(self
            .get_multi(keys)
            .await?
            .into_iter()
            .map(|v| (v.key.clone(), v))
            .collect())
    }

    /// `gets k1 k2 …` (beansdb always sends cas 0).
    pub async fn gets_multi<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<Vec<Value>> {
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
        match self.call(&Request::Gets { keys: &keys }).await? {
            Response::Values(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// `set key flag exptime <len> [noreply]`. For beansdb `exptime` is the version: 0 =
    /// next version, > 0 explicit, < 0 delete (node.md §3.7).
    ///
    /// With `noreply` nothing is awaited; a request the server rejects while parsing would
    /// still be answered (`CLIENT_ERROR`) and put the stream out of step, so only use it with
    /// valid keys and sizes.
    pub async fn set(
        &mut self,
        key: impl AsRef<[u8]>,
        flag: u32,
        exptime: i32,
        value: impl AsRef<[u8]>,
        noreply: bool,
    ) -> Result<StoreReply> {
        self.store(
            SetKind::Set,
            key.as_ref(),
            flag,
            exptime,
            value.as_ref(),
            noreply,
        )
        .await
    }

    /// Any storage command (`set`, `add`, `replace`, `cas` with cas 0, `append`, `prepend`).
    pub async fn store(
        &mut self,
        kind: SetKind,
        key: &[u8],
        flag: u32,
        exptime: i32,
        value: &[u8],
        noreply: bool,
    ) -> Result<StoreReply> {
        let req = Request::Set {
            kind,
            key,
            flag,
            exptime,
            value,
            noreply,
        };
        if noreply {
            self.request(&req).await?;
            return Ok(StoreReply::NoReply);
        }
        match self.call(&req).await? {
            Response::Stored => Ok(StoreReply::Stored),
            Response::NotStored => Ok(StoreReply::NotStored),
            Response::Exists => Ok(StoreReply::Exists),
            Response::NotFound => Ok(StoreReply::NotFound),
            other => Err(unexpected(&other)),
        }
    }

    /// `delete key`: true if deleted, false if not found.
    pub async fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<bool> {
        let req = Request::Delete {
            key: key.as_ref(),
            noreply: false,
        };
        match self.call(&req).await? {
            Response::Deleted => Ok(true),
            Response::NotFound => Ok(false),
            other => Err(unexpected(&other)),
        }
    }

    /// `incr key delta`: the new value, or `None` on `NOT_FOUND` (memcached; beansdb starts
    /// absent counters at 0 instead).
    pub async fn incr(&mut self, key: impl AsRef<[u8]>, delta: i64) -> Result<Option<i64>> {
        let req = Request::Incr {
            key: key.as_ref(),
            delta,
            noreply: false,
        };
        match self.call(&req).await? {
            Response::Number(n) => Ok(Some(n)),
            Response::NotFound => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// `stats [names…]` as a name → value map.
    pub async fn stats<N: AsRef<[u8]>>(&mut self, names: &[N]) -> Result<BTreeMap<String, String>> {
        let names: Vec<&[u8]> = names.iter().map(|n| n.as_ref()).collect();
        match self.call(&Request::Stats { names: &names }).await? {
            Response::Stats(pairs) => Ok(pairs
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// `version`: the text after `VERSION `.
    pub async fn version(&mut self) -> Result<String> {
        match self.call(&Request::Version).await? {
            Response::Version(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
            other => Err(unexpected(&other)),
        }
    }

    /// Splits the connection into a sending and a receiving half that can run concurrently
    /// (e.g. in two tasks, or both in one `select!`). Each sent request carries a tag of type
    /// `T` that the reader hands back with its reply. Fails if replies are pending.
    pub fn into_pipeline<T>(self) -> Result<(PipelineWriter<T>, PipelineReader<T>)> {
        if self.broken {
            return Err(Error::Broken);
        }
        if !self.pending.is_empty() || !self.wbuf.is_empty() {
            return Err(Error::Busy(self.pending.len()));
        }
        Ok(pipeline::split(
            self.stream,
            self.rbuf,
            self.decoder,
            self.config.timeout,
        ))
    }

    async fn write_queued(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.wbuf).await?;
        self.bytes_written += self.wbuf.len() as u64;
        self.wbuf.clear();
        Ok(())
    }

    async fn read_reply(&mut self) -> Result<Response> {
        let Some(&kind) = self.pending.front() else {
            return Err(Error::NothingPending);
        };
        self.decoder.expect(kind);
        loop {
            if let Some(resp) = self.decoder.decode(&mut self.rbuf)? {
                self.pending.pop_front();
                return Ok(resp);
            }
            reserve_for(&mut self.rbuf, &self.decoder);
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(Error::Closed);
            }
            self.bytes_read += n as u64;
        }
    }
}

/// Grows the read buffer once for a value whose length is known, instead of doubling.
pub(crate) fn reserve_for(buf: &mut BytesMut, decoder: &ResponseDecoder) {
    let want = match decoder.pending_value_len() {
        Some(len) => (len + 2).saturating_sub(buf.len()).max(READ_CHUNK),
        None => READ_CHUNK,
    };
    buf.reserve(want);
}

pub(crate) async fn with_timeout<R>(
    t: Option<Duration>,
    fut: impl Future<Output = Result<R>>,
) -> Result<R> {
    match t {
        Some(t) => tokio::time::timeout(t, fut)
            .await
            .unwrap_or(Err(Error::Timeout(t))),
        None => fut.await,
    }
}

fn unexpected(resp: &Response) -> Error {
    let mut s = format!("{resp:?}");
    s.truncate(200);
    Error::Unexpected(s)
}
