//! The CLI's [`Reporter`]: indicatif bars on a terminal's stderr (files and bytes done),
//! warnings and notices as `czc:` lines on stderr, drawn around a live bar.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use czcache::report::{Progress, Reporter, Silent};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct StderrReporter {
    /// Draw bars (stderr is a terminal and the user did not turn them off).
    bars: bool,
    /// Leave out notices (`-q`); warnings are problems and always shown.
    quiet: bool,
    /// The bar being drawn, so a warning can be written around it.
    live: Mutex<Option<ProgressBar>>,
}

impl StderrReporter {
    pub fn new(bars: bool, quiet: bool) -> StderrReporter {
        StderrReporter {
            bars: bars && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            quiet,
            live: Mutex::new(None),
        }
    }

    fn line(&self, text: &str) {
        // A closed stderr loses the line, never the command (`eprintln!` would panic).
        let print = || {
            let _ = writeln!(std::io::stderr(), "{text}");
        };
        match self.live.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(bar) if !bar.is_hidden() => bar.suspend(print),
            _ => print(),
        }
    }
}

impl Reporter for StderrReporter {
    fn task(&self, title: &'static str) -> Arc<dyn Progress> {
        if !self.bars {
            return Arc::new(Silent);
        }
        let bar = Bar::new(title);
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.bar.clone());
        Arc::new(bar)
    }

    fn warn(&self, message: &str) {
        self.line(&format!("czc: warning: {message}"));
    }

    fn error(&self, message: &str) {
        self.line(&format!("czc: error: {message}"));
    }

    fn notice(&self, message: &str) {
        if !self.quiet {
            self.line(&format!("czc: {message}"));
        }
    }
}

/// One task's bar: `pushing 3/10 files [=====>    ] 12 MiB/40 MiB 8 MiB/s 3s`.
struct Bar {
    bar: ProgressBar,
    title: &'static str,
    files_total: AtomicU64,
    files_done: AtomicU64,
}

impl Bar {
    fn new(title: &'static str) -> Bar {
        // Hidden until there is something to count: no empty `0 B/0 B` bar.
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden()).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(title);
        Bar {
            bar,
            title,
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
        }
    }

    fn show_files(&self) {
        let total = self.files_total.load(Ordering::Relaxed);
        if total > 1 {
            let done = self.files_done.load(Ordering::Relaxed).min(total);
            self.bar
                .set_message(format!("{} {done}/{total} files", self.title));
        }
    }
}

impl Progress for Bar {
    fn add_work(&self, files: u64, bytes: u64) {
        self.files_total.fetch_add(files, Ordering::Relaxed);
        self.bar.inc_length(bytes);
        if bytes > 0 && self.bar.is_hidden() {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        self.show_files();
    }

    fn bytes_done(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn files_done(&self, files: u64) {
        self.files_done.fetch_add(files, Ordering::Relaxed);
        self.show_files();
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
