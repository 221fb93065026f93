//! Round trips against a real `beansdb` node (see `beansdb_client::testing` for how it is
//! found and started).

use std::time::Duration;

use beansdb_client::testing::TestNode;
use beansdb_client::{
    Client, ClientConfig, Error, ReplyKind, Request, Response, ServerErrorKind, StoreReply,
};

async fn connect(node: &TestNode) -> Client {
    Client::connect(&node.addr())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", node.log_tail()))
}

#[tokio::test]
async fn basic_round_trips() {
    let node = TestNode::start();
    let mut c = connect(&node).await;

    assert!(c.version().await.unwrap().starts_with("2.1"));

    assert_eq!(c.get("rt:absent").await.unwrap(), None);
    assert_eq!(
        c.set("rt:a", 7, 0, b"alpha", false).await.unwrap(),
        StoreReply::Stored
    );
    let v = c.get("rt:a").await.unwrap().expect("hit");
    assert_eq!(&v.key[..], b"rt:a");
    assert_eq!(v.flag, 7);
    assert_eq!(&v.data[..], b"alpha");

    // Multi-get: hits in request order, misses omitted.
    c.set("rt:b", 0, 0, b"beta", false).await.unwrap();
    let got = c.get_multi(&["rt:b", "rt:nope", "rt:a"]).await.unwrap();
    let pairs: Vec<(&[u8], &[u8])> = got.iter().map(|v| (&v.key[..], &v.data[..])).collect();
    assert_eq!(
        pairs,
        vec![(&b"rt:b"[..], &b"beta"[..]), (b"rt:a", b"alpha")]
    );
    let map = c.get_map(&["rt:a", "rt:b"]).await.unwrap();
    assert_eq!(map.len(), 2);

    // noreply: nothing awaited, the next request still lines up.
    assert_eq!(
        c.set("rt:quiet", 0, 0, b"shh", true).await.unwrap(),
        StoreReply::NoReply
    );
    assert_eq!(&c.get("rt:quiet").await.unwrap().unwrap().data[..], b"shh");

    assert!(c.delete("rt:a").await.unwrap());
    assert!(!c.delete("rt:a").await.unwrap());
    assert_eq!(c.get("rt:a").await.unwrap(), None);

    // beansdb counters start at 0 for an absent key (node.md §3.8).
    assert_eq!(c.incr("rt:counter", 5).await.unwrap(), Some(5));
    assert_eq!(c.incr("rt:counter", 3).await.unwrap(), Some(8));
    let v = c.get("rt:counter").await.unwrap().unwrap();
    assert_eq!((&v.data[..], v.flag), (&b"8"[..], 0x204));

    let stats = c.stats::<&str>(&[]).await.unwrap();
    for name in [
        "cmd_get",
        "cmd_set",
        "get_hits",
        "get_misses",
        "curr_connections",
    ] {
        assert!(stats.contains_key(name), "stats lacks {name}: {stats:?}");
    }
    let gets: u64 = stats["cmd_get"].parse().unwrap();
    assert!(gets >= 6, "cmd_get {gets}");

    // Raw command with an explicit reply kind.
    let r = c
        .command(b"get rt:b\r\n", ReplyKind::Retrieval)
        .await
        .unwrap();
    assert!(
        matches!(r, Response::Values(ref v) if v.len() == 1),
        "{r:?}"
    );
    assert!(c.bytes_written() > 0 && c.bytes_read() > 0);
}

#[tokio::test]
async fn one_mib_value() {
    let node = TestNode::start();
    let mut c = connect(&node).await;
    // Pseudo-random bytes, including \r\n and NULs, so framing is really exercised.
    let mut x: u32 = 0x1234_5678;
    let value: Vec<u8> = (0..(1 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    assert_eq!(
        c.set("big:1m", 3, 0, &value, false).await.unwrap(),
        StoreReply::Stored
    );
    let got = c.get("big:1m").await.unwrap().expect("hit");
    assert_eq!(got.flag, 3);
    assert_eq!(got.data.len(), value.len());
    assert!(got.data[..] == value[..], "1 MiB value differs");
    // The same value again in a multi-get next to a small one.
    c.set("big:small", 0, 0, b"s", false).await.unwrap();
    let got = c.get_multi(&["big:small", "big:1m"]).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[1].data[..] == value[..]);
}

#[tokio::test]
async fn server_errors_keep_the_connection() {
    let node = TestNode::start();
    let mut c = connect(&node).await;
    // A negative version on an absent key fails (node.md §3.7 rule 4).
    match c.set("se:absent", 0, -1, b"x", false).await {
        Err(Error::Server { kind, msg }) => {
            assert_eq!(kind, ServerErrorKind::Server);
            assert_eq!(msg, "NOT_FOUND");
        }
        other => panic!("expected SERVER_ERROR, got {other:?}"),
    }
    // An invalid write key is NOT_STORED, not an error.
    assert_eq!(
        c.set("@bad", 0, 0, b"x", false).await.unwrap(),
        StoreReply::NotStored
    );
    // Unknown command → ERROR, connection stays open.
    let e = c.command(b"bogus\r\n", ReplyKind::Ok).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Server {
                kind: ServerErrorKind::Error,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(c.is_usable());
    // Keys that would break the line are refused before anything is sent.
    assert!(matches!(c.get("a b").await.unwrap_err(), Error::Encode(_)));
    assert!(c.is_usable());
    assert!(c.version().await.is_ok());
}

#[tokio::test]
async fn queued_pipelining_in_order() {
    let node = TestNode::start();
    let mut c = connect(&node).await;
    let keys: Vec<String> = (0..200).map(|i| format!("pq:{i:03}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let v = format!("v{i}");
        c.send(&Request::Set {
            kind: beansdb_client::SetKind::Set,
            key: k.as_bytes(),
            flag: 0,
            exptime: 0,
            value: v.as_bytes(),
            noreply: false,
        })
        .unwrap();
    }
    assert_eq!(c.pending(), 200);
    // A convenience call refuses to run while replies are pending.
    assert!(matches!(c.version().await, Err(Error::Busy(200))));
    for _ in 0..200 {
        assert_eq!(c.recv().await.unwrap(), Response::Stored);
    }
    for k in &keys {
        c.send(&Request::Get {
            keys: &[k.as_bytes()],
        })
        .unwrap();
    }
    for i in 0..200 {
        match c.recv().await.unwrap() {
            Response::Values(v) => assert_eq!(v[0].data, format!("v{i}")),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(c.recv().await, Err(Error::NothingPending)));
}

#[tokio::test]
async fn split_pipeline_with_tags() {
    let node = TestNode::start();
    let c = connect(&node).await;
    let (mut w, mut r) = c.into_pipeline::<usize>().unwrap();
    const N: usize = 2000;
    let writer = async move {
        for i in 0..N {
            // A set and the get right after it share a key.
            let key = format!("sp:{}", (i / 2) % 100);
            let value = format!("{i}");
            let req = if i % 2 == 0 {
                Request::Set {
                    kind: beansdb_client::SetKind::Set,
                    key: key.as_bytes(),
                    flag: 0,
                    exptime: 0,
                    value: value.as_bytes(),
                    noreply: false,
                }
            } else {
                Request::Get {
                    keys: &[key.as_bytes()],
                }
            };
            w.queue(&req, i).unwrap();
            // Several requests per write now and then, like a pipelining client.
            if i % 7 == 0 {
                w.flush().await.unwrap();
            }
        }
        w.finish().await.unwrap()
    };
    let reader = async {
        let mut seen = 0;
        while let Some((tag, res)) = r.recv().await {
            assert_eq!(tag, seen, "replies out of order");
            match res.unwrap() {
                Response::Stored => assert_eq!(tag % 2, 0),
                // The set just before this get wrote its own number.
                Response::Values(v) => assert_eq!(v[0].data, format!("{}", tag - 1)),
                other => panic!("{other:?}"),
            }
            seen += 1;
        }
        seen
    };
    let (_half, seen) = tokio::join!(writer, reader);
    assert_eq!(seen, N);
    assert!(r.bytes_read() > 0);
}

#[tokio::test]
async fn connect_failures_are_typed() {
    // A port that was free a moment ago: nothing listens there.
    let port = beansdb_client::testing::free_port();
    let e = Client::connect(&format!("127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(e.is_connection());
    let e = Client::connect("no-port-here").await.unwrap_err();
    assert!(matches!(e, Error::Resolve { .. }), "{e:?}");
}

#[tokio::test]
async fn read_timeout_breaks_the_connection() {
    // A listener that accepts and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(s);
    });
    let cfg = ClientConfig::default().timeout(Some(Duration::from_millis(200)));
    let mut c = Client::connect_with(&addr, cfg).await.unwrap();
    let t0 = std::time::Instant::now();
    let e = c.get("k").await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(!c.is_usable());
    assert!(matches!(c.get("k").await, Err(Error::Broken)));
    hold.abort();
}

#[tokio::test]
async fn closed_by_server_is_reported() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        drop(s);
    });
    let mut c = Client::connect(&addr).await.unwrap();
    server.await.unwrap();
    let e = c.version().await.unwrap_err();
    assert!(e.is_connection(), "{e:?}");
}

#[tokio::test]
async fn pipeline_failure_hands_back_every_tag() {
    use tokio::io::AsyncReadExt;
    // A server that answers the first request, then closes while two are outstanding.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 1024];
        let mut got = Vec::new();
        while got.windows(2).filter(|w| w == b"\r\n").count() < 3 {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"VERSION 1\r\n").await.unwrap();
    });
    let c = Client::connect(&addr).await.unwrap();
    let (mut w, mut r) = c.into_pipeline::<u32>().unwrap();
    for tag in 1..=3 {
        w.queue(&Request::Version, tag).unwrap();
    }
    w.flush().await.unwrap();
    server.await.unwrap();
    let (t, res) = r.recv().await.unwrap();
    assert_eq!((t, res.unwrap()), (1, Response::Version("1".into())));
    let (t, res) = r.recv().await.unwrap();
    assert_eq!(t, 2);
    assert!(res.unwrap_err().is_connection());
    // After the failure the rest come back at once, without waiting for the writer.
    let (t, res) = r.recv().await.unwrap();
    assert_eq!(t, 3);
    assert!(matches!(res, Err(Error::Broken)));
    assert!(r.recv().await.is_none());
    assert!(r.drain().is_empty());
    drop(w);
}
