//! Ctrl-C handling (tools.md §9): the first interrupt asks the command to stop gracefully
//! (finish in-flight work, print a partial report, exit 130); a second exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::exit;

#[derive(Clone)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    rx: watch::Receiver<bool>,
}

impl Interrupt {
    /// Starts listening for SIGINT; must be called inside a tokio runtime.
    pub fn install() -> Interrupt {
        let flag = Arc::new(AtomicBool::new(false));
        let (tx, rx) = watch::channel(false);
        let f = flag.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            f.store(true, Ordering::SeqCst);
            let _ = tx.send(true);
            eprintln!("interrupted: finishing in-flight requests (Ctrl-C again to quit now)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        });
        Interrupt { flag, rx }
    }

    /// An interrupt that never fires (for tests and library callers).
    pub fn never() -> Interrupt {
        // The sender is dropped at once; `wait` then pends forever.
        let (_tx, rx) = watch::channel(false);
        Interrupt {
            flag: Arc::new(AtomicBool::new(false)),
            rx,
        }
    }

    pub fn fired(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Resolves once the first interrupt arrives.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the listener is gone without an interrupt: never resolve.
        if rx.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
