//! Capturing tracing output, for secret-leak assertions.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use leasehold_core::Credentials;
use tracing_subscriber::fmt::MakeWriter;

/// Everything logged at TRACE by any thread of this process since [`capture_tracing`] was
/// first called.
#[derive(Debug, Clone, Default)]
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl LogCapture {
    /// The captured text.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// The writer behind [`LogCapture`].
#[derive(Debug)]
pub struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(self.buf.clone())
    }
}

/// Installs (once per process) a global TRACE subscriber that writes into a buffer, and
/// returns the capture. Every test of the process shares it; look for your own secrets only.
///
/// If another global subscriber was installed first, the capture stays empty; the function
/// then panics so that a leak test cannot pass vacuously.
pub fn capture_tracing() -> LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = LogCapture::default();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(capture.clone())
                .try_init()
                .expect("capture_tracing must install the process's first tracing subscriber");
            tracing::trace!("leasehold testkit log capture installed");
            assert!(
                capture.contents().contains("log capture installed"),
                "tracing capture is not receiving events"
            );
            capture
        })
        .clone()
}

/// Panics if any secret value of `credentials` occurs in `haystack`. `what` names the text.
pub fn assert_no_secret(what: &str, haystack: &str, credentials: &Credentials) {
    for secret in credentials.secret_values() {
        assert!(!secret.is_empty(), "credential has an empty secret");
        assert!(
            !haystack.contains(secret),
            "a secret value of {} leaked into {what}",
            credentials.principal()
        );
    }
}
