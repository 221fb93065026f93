//! `beansctl bench` end to end: against a real node, against in-process mock servers, and
//! the user-error conventions of tools.md §9.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beansdb_client::testing::TestNode;
use common::{beansctl, beansctl_env, json_ok, text, Acceptor};
use serde_json::Value;

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing or not an integer in {v}"))
}

fn assert_latency_ordered(l: &Value) {
    let p: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| {
            l[k].as_u64()
                .unwrap_or_else(|| panic!("latency lacks {k}: {l}"))
        })
        .collect();
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "percentiles not ordered: {l}"
    );
    assert!(l["mean"].is_number(), "{l}");
}

#[test]
fn open_loop_json_against_a_node() {
    let node = TestNode::start();
    let addr = node.addr();
    let out = beansctl(&[
        "bench",
        "--target",
        &addr,
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--rate",
        "2000",
        "--connections",
        "4",
        "--keys",
        "1000",
        "--json",
    ]);
    let v = json_ok(&out);
    for field in [
        "tool",
        "version",
        "target",
        "config",
        "started_at",
        "duration_s",
        "requests",
        "ok",
        "errors",
        "dropped",
        "late",
        "throughput_rps",
        "keys_per_s",
        "hit_ratio",
        "bytes_sent",
        "bytes_received",
        "preload",
        "latency_us",
        "per_op",
    ] {
        assert!(v.get(field).is_some(), "JSON lacks {field}: {v}");
    }
    assert_eq!(v["tool"], "beansctl bench");
    assert_eq!(v["target"], addr.as_str());
    let requests = u(&v, "/requests");
    // Open loop at 2000/s for 1 s: the arrivals are counted, not the server's pace.
    assert!((1900..=2100).contains(&requests), "requests {requests}");
    assert_eq!(u(&v, "/ok"), requests);
    for kind in [
        "server_error",
        "client_error",
        "timeout",
        "connection",
        "protocol",
        "corrupt",
    ] {
        assert_eq!(u(&v, &format!("/errors/{kind}")), 0, "errors.{kind}: {v}");
    }
    assert_eq!(u(&v, "/dropped"), 0);
    assert_eq!(u(&v, "/preload/keys"), 1000);
    assert!(v["preload"]["duration_s"].is_number());
    assert!(v["hit_ratio"].as_f64().unwrap_or(0.0) > 0.99, "{v}");
    assert_latency_ordered(&v["latency_us"]);
    let mut sum = 0;
    for op in ["get", "set", "getm"] {
        let o = &v["per_op"][op];
        for f in [
            "requests",
            "ok",
            "throughput_rps",
            "hits",
            "misses",
            "latency_us",
        ] {
            assert!(o.get(f).is_some(), "per_op.{op} lacks {f}: {o}");
        }
        sum += u(o, "/requests");
    }
    assert_eq!(sum, requests);
    assert!(u(&v, "/bytes_sent") > 0 && u(&v, "/bytes_received") > 0);
    assert!(out.stderr.is_empty() || !text(&out.stderr).contains('\x1b'));
}

#[test]
fn closed_loop_budget_and_verify_text_output() {
    let node = TestNode::start();
    let out = beansctl(&[
        "bench",
        "--target",
        &node.addr(),
        "--rate",
        "0",
        "--requests",
        "500",
        "--duration",
        "30s",
        "--warmup",
        "0",
        "--keys",
        "300",
        "--verify",
        "--value-size",
        "10..2K",
        "--mix",
        "get:5,set:3,getm:1,delete:1",
        "--getm-keys",
        "2..20",
        "--key-dist",
        "zipf:0.9",
        "--seed",
        "42",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("bench → "), "{stdout}");
    assert!(stdout.contains("rate closed-loop (pipeline 1)"), "{stdout}");
    assert!(
        stdout.contains("requests 500  ok 500  errors 0"),
        "{stdout}"
    );
    assert!(stdout.contains("corrupt 0"), "{stdout}");
    assert!(stdout.contains("seed 42"), "{stdout}");
    assert!(stdout.contains("latency µs"), "{stdout}");
    for op in ["all", "get", "set", "getm", "delete"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{op} "))),
            "no {op} row: {stdout}"
        );
    }
    // Redirected output carries no ANSI escapes and no progress bar.
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "{stderr}"
    );
}

/// A memcached-ish mock: answers every `get` line after `delay` with `reply`, and records
/// the keys of each get. Only retrievals are understood (tests use read-only mixes).
struct Mock {
    addr: String,
    gets: Arc<Mutex<Vec<Vec<String>>>>,
    _server: Acceptor,
}

impl Mock {
    fn start(delay: Duration, reply: &'static str) -> Mock {
        let gets = Arc::new(Mutex::new(Vec::new()));
        let g = gets.clone();
        let server = Acceptor::start(move |conn| {
            let g = g.clone();
            std::thread::spawn(move || serve(conn, delay, reply, g));
        });
        Mock {
            addr: server.addr.to_string(),
            gets,
            _server: server,
        }
    }
}

fn serve(conn: TcpStream, delay: Duration, reply: &str, gets: Arc<Mutex<Vec<Vec<String>>>>) {
    let mut w = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut lines = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let toks: Vec<&str> = line.trim_end().split(' ').collect();
        if toks.first() == Some(&"get") {
            gets.lock()
                .unwrap()
                .push(toks[1..].iter().map(|s| s.to_string()).collect());
        }
        std::thread::sleep(delay);
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn getm_sends_the_requested_number_of_printable_keys() {
    let mock = Mock::start(Duration::ZERO, "END\r\n");
    let out = beansctl(&[
        "bench",
        "--target",
        &mock.addr,
        "--rate",
        "0",
        "--requests",
        "200",
        "--warmup",
        "0",
        "--mix",
        "getm:1",
        "--getm-keys",
        "7",
        "--no-preload",
        "--connections",
        "2",
        "--json",
    ]);
    let v = json_ok(&out);
    assert_eq!(u(&v, "/requests"), 200);
    assert_eq!(u(&v, "/per_op/getm/misses"), 200 * 7);
    let gets = mock.gets.lock().unwrap();
    assert!(gets.len() >= 200, "{}", gets.len());
    for keys in gets.iter() {
        assert_eq!(keys.len(), 7, "{keys:?}");
        let mut uniq = keys.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 7, "duplicate keys {keys:?}");
        for k in keys {
            assert!(
                k.starts_with("bench:") && k.len() == "bench:99999".len(),
                "{k}"
            );
            assert!(k.bytes().all(|b| b.is_ascii_graphic()), "{k:?}");
        }
    }
}

#[test]
fn open_loop_latency_counts_queueing_delay() {
    // 20 ms per reply on one connection serves 50/s; offered 100/s, so requests queue and
    // latency from the scheduled time must show it (no coordinated omission).
    let mock = Mock::start(Duration::from_millis(20), "END\r\n");
    let out = beansctl(&[
        "bench",
        "--target",
        &mock.addr,
        "--rate",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--connections",
        "1",
        "--mix",
        "get:1",
        "--no-preload",
        "--timeout",
        "10s",
        "--json",
    ]);
    let v = json_ok(&out);
    assert!((95..=105).contains(&u(&v, "/requests")), "{v}");
    assert!(u(&v, "/latency_us/p99") > 400_000, "{}", v["latency_us"]);
    assert!(u(&v, "/late") > 0, "{v}");
    assert!(u(&v, "/max_lag_us") > 100_000, "{v}");
}

#[test]
fn server_errors_are_counted_and_fail_if_errors_exits_1() {
    let mock = Mock::start(Duration::ZERO, "SERVER_ERROR boom\r\n");
    let args = [
        "bench",
        "--target",
        &mock.addr,
        "--rate",
        "0",
        "--requests",
        "50",
        "--warmup",
        "0",
        "--mix",
        "get:1",
        "--no-preload",
        "--connections",
        "1",
        "--json",
    ];
    let v = json_ok(&beansctl(&args));
    assert_eq!(u(&v, "/errors/server_error"), 50);
    assert_eq!(u(&v, "/ok"), 0);
    let mut with_flag = args.to_vec();
    with_flag.push("--fail-if-errors");
    let out = beansctl(&with_flag);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // Still one JSON report on stdout.
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(u(&v, "/errors/server_error"), 50);
}

#[test]
fn user_errors_exit_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "--duration", "2h"], "--duration"),
        (&["bench", "--duration", "ten"], "--duration"),
        (&["bench", "--connections", "0"], "--connections"),
        (&["bench", "--connections", "10001"], "--connections"),
        (&["bench", "--mix", "get:0"], "--mix"),
        (&["bench", "--mix", "put:1"], "--mix"),
        (&["bench", "--value-size", "1K..10"], "--value-size"),
        (&["bench", "--key-dist", "zipf:-1"], "--key-dist"),
        (&["bench", "--getm-keys", "0"], "--getm-keys"),
        (&["bench", "--no-such-flag"], "--no-such-flag"),
        (
            &["bench", "--keys", "5", "--getm-keys", "10"],
            "--getm-keys",
        ),
        (&["bench", "--key-prefix", "a b"], "--key-prefix"),
        (&["bench", "--target", "nonsense"], "HOST:PORT"),
        (
            &["bench", "--target", "192.0.2.1:7905"],
            "not a loopback address",
        ),
        (
            &["bench", "--target", "[2001:db8::1]:7905"],
            "not a loopback address",
        ),
    ];
    for (args, needle) in cases {
        let out = beansctl(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?} should mention {needle}: {err}"
        );
        assert!(
            !err.contains("panicked at") && !err.contains("backtrace"),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
    let out = beansctl(&["bench", "--target", "192.0.2.1:7905"]);
    assert_eq!(
        text(&out.stderr).lines().next(),
        Some("error: target 192.0.2.1:7905 is not a loopback address; pass --allow-remote")
    );
}

#[test]
fn unreachable_target_exits_3() {
    let port = beansdb_client::testing::free_port();
    let target = format!("127.0.0.1:{port}");
    let out = beansctl(&["bench", "--target", &target, "--duration", "1s"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.starts_with(&format!("error: cannot connect to target {target}")),
        "{err}"
    );
    assert!(err.contains("caused by:"), "{err}");
    assert!(!err.contains("panicked at"), "{err}");
}

#[test]
fn redirected_progress_is_plain_lines() {
    let mock = Mock::start(Duration::ZERO, "END\r\n");
    let out = beansctl_env(
        &[
            "bench",
            "--target",
            &mock.addr,
            "--rate",
            "500",
            "--duration",
            "1500ms",
            "--warmup",
            "0",
            "--mix",
            "get:1",
            "--no-preload",
            "--connections",
            "2",
        ],
        &[("BEANSCTL_PROGRESS_EVERY", "300ms")],
    );
    assert!(out.status.success());
    let err = text(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("[bench 00:00:0"))
        .collect();
    assert!(lines.len() >= 2, "no plain progress lines: {err}");
    assert!(lines.iter().any(|l| l.contains("requests ")), "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    // Results stay on stdout, progress never goes there.
    assert!(!text(&out.stdout).contains("[bench "));
}

#[test]
fn version_and_help() {
    let out = beansctl(&["--version"]);
    assert!(out.status.success());
    let v = text(&out.stdout);
    assert!(v.starts_with("beansctl 0.") && v.contains(" ("), "{v}");
    let out = beansctl(&["help", "bench"]);
    assert!(out.status.success());
    let h = text(&out.stdout);
    for flag in [
        "--rate",
        "--getm-keys",
        "--allow-remote",
        "--json",
        "--timeout",
    ] {
        assert!(h.contains(flag), "help lacks {flag}");
    }
}
