//! Unit-test support: a scripted memcached-text backend on a loopback port that counts the
//! connections it accepts (for tests of the proxy's own connection handling).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;

/// Starts the backend on a new port; `serve` runs for each accepted connection with its
/// request lines and its write half. Returns the address and the count of accepted connections.
pub async fn line_backend<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (addr, serve_on(l, serve))
}

/// [`line_backend`] on a listener the test bound itself (e.g. to restart on the same port).
pub fn serve_on<F, Fut>(l: TcpListener, serve: F) -> Arc<AtomicUsize>
where
    F: Fn(Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            let (rd, wr) = sock.into_split();
            tokio::spawn(serve(BufReader::new(rd).lines(), wr));
        }
    });
    accepted
}
