//! Progress bars for long commands, drawn on stderr only when it is a
//! terminal (indicatif hides them otherwise), so scripts and logs see none.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use dropgate::pipeline::Progress;

/// A bar of `total` items (`unit`: `bytes` or a word), set with `set_position`.
pub(super) fn bar(total: u64, unit: &str) -> ProgressBar {
    let template = if unit == "bytes" {
        "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)"
            .to_string()
    } else {
        format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit}")
    };
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A spinner with a message, for work whose size is not known.
pub(super) fn spinner(message: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner().with_message(message.to_string());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

/// Draws processing's bytes read against `total` until dropped.
pub(super) struct Reading {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reading {
    pub(super) fn start(progress: Progress, total: u64) -> Reading {
        let done = Arc::new(AtomicBool::new(false));
        // Nothing would be drawn: no thread to wake ten times a second.
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Reading { done, thread: None };
        }
        let thread = {
            let done = done.clone();
            std::thread::spawn(move || {
                let bar = bar(total, "bytes");
                while !done.load(Ordering::Relaxed) {
                    bar.set_position(progress.bytes_read().min(total));
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        };
        Reading {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
